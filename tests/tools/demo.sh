#!/usr/bin/env bash
# `make demo`: create the lab (podman hosts from inventories/local) and run site.yml against it.
# `make demo-down`: remove the lab (podman hosts and the Kubernetes test cluster). State on the controller (CA, passwords) stays in
# inventories/local/.private until `make clean`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
. tests/tools/lib.sh
export PATH="$root/.venv/bin:$root/.tools/bin:$PATH" ANSIBLE_CONFIG="$root/ansible.cfg"
inv=inventories/local
case ${1:-up} in
  up)
    LLMOPS_TEST_IMAGE=$(tests/images/debian12-systemd/build.sh); export LLMOPS_TEST_IMAGE
    eval "$(tests/tools/podman-env.sh)"
    say "lab: podman hosts for $inv"
    ansible-playbook -i "$inv" tests/lab/lab.yml
    say "lab: Kubernetes (tests/cluster: built once from Debian's source package, then cached)"
    tests/cluster/build.sh
    tests/cluster/up.sh
    # The lab has no GPU: advertise one fake nvidia.com/gpu and GPU feature-discovery labels so
    # GPU requests, selectors and "Insufficient nvidia.com/gpu" behave as on a GPU node.
    tests/cluster/fake-gpu.sh 1
    say "site: ansible-playbook -i $inv playbooks/site.yml"
    ansible-playbook -i "$inv" playbooks/site.yml
    ;;
  down)
    [ -x .venv/bin/ansible-playbook ] || exit 0
    LLMOPS_TEST_IMAGE=unused; export LLMOPS_TEST_IMAGE
    eval "$(tests/tools/podman-env.sh)"
    ansible-playbook -i "$inv" tests/lab/lab.yml -e lab_state=absent
    tests/cluster/down.sh
    ;;
  *) die "usage: demo.sh up|down" ;;
esac
