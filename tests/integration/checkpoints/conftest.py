"""Fixtures of the checkpoint tests (defined in ckpt_helpers.py, which the tests also import)."""
from ckpt_helpers import ansible_sync, ckpt, s3  # noqa: F401  pylint: disable=unused-import
