# Shared helpers for the scripts under tests/tools (sourced, not run).
# shellcheck shell=bash
: "${LLMOPS_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/llmops-onprem}"
export LLMOPS_CACHE
say() { printf '\033[1m[llmops]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[llmops] error:\033[0m %s\n' "$*" >&2; exit 1; }
