# Source me: the environment molecule scenarios need (image, podman settings, tools on PATH).
# shellcheck shell=bash
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PATH="$_root/.venv/bin:$_root/.tools/bin:$PATH" ANSIBLE_CONFIG="$_root/ansible.cfg" NO_COLOR=1
LLMOPS_TEST_IMAGE=$("$_root/tests/images/debian12-systemd/build.sh") && export LLMOPS_TEST_IMAGE
_penv=$("$_root/tests/tools/podman-env.sh") && eval "$_penv"
