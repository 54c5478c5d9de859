"""The verify lab reuses the checkpoint tests' real `rclone serve s3` stand-in (tests/integration/checkpoints)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints"))

from ckpt_helpers import s3  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position
