"""Issue 19 item 11: helm on the site's controller comes from the bundle, not from PATH. A bundle whose
`binaries/helm` is the real helm (the one `make setup` puts in .tools/bin) is imported by the
bundle_import role: the verified file is made executable, run once, and recorded in the site's state file
as llmops_site.bundle_import.helm, which the chart stages' *_helm_binary defaults resolve to (read here
from the roles' own defaults files, as a stage run alone would after loading the state file). A re-run
changes nothing. A `binaries/helm` that does not run on this controller is refused with its path named,
and nothing is recorded; a bundle without helm records an empty path (the stages then use PATH)."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HELM = os.environ.get("HELM", os.path.join(REPO, ".tools", "bin", "helm"))
STAGES = ("vllm_serving", "model_engine", "gpu_operator")
PLAY = """
- name: Import a bundle with the role site.yml uses
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    llmops_bundle: %(media)s
  roles:
    - role: llmops.onprem.bundle_import
      bundle_import_public_key: %(pub)s
      bundle_import_dest: %(dest)s

- name: A later stage run alone - its helm default, from the state file
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Load the site's state file
      ansible.builtin.include_role:
        name: llmops.onprem.site_state
        tasks_from: load
%(includes)s
"""
INCLUDE = """
    - name: The {role} role's defaults
      ansible.builtin.include_vars:
        file: %(repo)s/roles/{role}/defaults/main.yml
        name: {role}_defaults
    - name: Show {role}'s helm
      ansible.builtin.debug:
        msg: "HELM {role}={{{{ {role}_defaults.{role}_helm_binary }}}}"
"""


def media(tmp, helm_bytes=None):
    k = ed25519.Ed25519PrivateKey.generate()
    priv, pub = tmp / "k.pem", tmp / "k.pub.pem"
    priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    root = tmp / "bundle"
    (root / "binaries").mkdir(parents=True)
    (root / "models" / "m").mkdir(parents=True)
    (root / "models" / "m" / "config.json").write_text("{}")
    if helm_bytes == "real":
        shutil.copyfile(HELM, str(root / "binaries" / "helm"))
        os.chmod(str(root / "binaries" / "helm"), 0o644)   # as a FAT medium would hand it over: no x bit
    elif helm_bytes is not None:
        (root / "binaries" / "helm").write_bytes(helm_bytes)
    bundle_seal.run(dict(path=str(root), private_key=str(priv), spec={}, versions={}, images=[]), False)
    bundle_pack.run(dict(src=str(root), dest=str(tmp / "media"), private_key=str(priv), segment_size="64MiB",
                         read_back=False, progress_file=None), False)
    return str(tmp / "media"), str(pub)


def play(tmp_path, src, pub):
    inventory = tmp_path / "site"
    inventory.mkdir(exist_ok=True)
    (inventory / "hosts.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    dest = inventory / ".bundle"
    path = tmp_path / "play.yml"
    includes = "".join(INCLUDE.format(role=r) for r in STAGES) % dict(repo=REPO)
    path.write_text(PLAY % dict(media=src, pub=pub, dest=dest, includes=includes))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
               # no helm on PATH: whatever the stages get must come from the bundle
               PATH=os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                    if not os.path.exists(os.path.join(p, "helm"))))
    p = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inventory / "hosts.yml"),
                        str(path)], capture_output=True, text=True, check=False, env=env, cwd=str(tmp_path))
    out = p.stdout + p.stderr
    recap = [ln for ln in p.stdout.splitlines() if ln.startswith("localhost ") and "changed=" in ln]
    changed = int(recap[-1].split("changed=")[1].split()[0]) if recap else None
    state = inventory / ".private" / "site-state.json"
    return p.returncode, out, changed, dest, (json.loads(state.read_text()) if state.exists() else None)


@pytest.fixture(autouse=True)
def _helm():
    if not os.access(HELM, os.X_OK):
        pytest.fail("helm not found at %s: run make setup (or set HELM)" % HELM)


def test_the_bundles_helm_is_made_executable_recorded_and_the_stages_default_to_it(tmp_path):
    src, pub = media(tmp_path, "real")
    rc, out, _changed, dest, state = play(tmp_path, src, pub)
    assert rc == 0, out[-4000:]
    helm = str(dest / "binaries" / "helm")
    assert os.access(helm, os.X_OK)
    record = state["bundle_import"]
    assert record["helm"] == helm, record
    version = subprocess.run([HELM, "version", "--short"], capture_output=True, text=True, check=True).stdout.strip()
    assert record["helm_version"] == version
    for role in STAGES:
        assert "HELM %s=%s" % (role, helm) in out, out[-3000:]

    rc, out, changed, _dest, _state = play(tmp_path, src, pub)
    assert rc == 0 and changed == 0, out[-4000:]


def test_a_helm_that_does_not_run_here_is_refused_and_nothing_is_recorded(tmp_path):
    src, pub = media(tmp_path, b"\x7fELF\x02\x01\x01 not really a program\n" * 100)
    rc, out, _changed, dest, state = play(tmp_path, src, pub)
    assert rc != 0
    flat = " ".join(out.split())
    assert "bundle_import: the bundle's helm (%s) does not run on this controller" % (dest / "binaries" / "helm") in flat, flat[-3000:]
    assert "Build the bundle with the helm binary for the controller's architecture" in flat
    assert state is None or "bundle_import" not in state, state


def test_without_helm_in_the_bundle_the_stages_use_path(tmp_path):
    src, pub = media(tmp_path)
    rc, out, _changed, _dest, state = play(tmp_path, src, pub)
    assert rc == 0, out[-4000:]
    assert state["bundle_import"]["helm"] == "" and state["bundle_import"]["helm_version"] == "", state
    for role in STAGES:
        assert "HELM %s=" % role in out and "HELM %s=/" % role not in out, out[-3000:]
