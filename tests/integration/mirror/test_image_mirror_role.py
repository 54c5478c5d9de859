"""The image_mirror role on this host (connection local, files under a temporary directory): hosts.toml per
upstream, the CA, and config_path set in containerd's config.toml in each shape that file comes in;
old-style mirrors refused; a second run changes nothing. The pulls themselves are tested in the
cluster layer (tests/integration/cluster/test_image_mirror.py)."""
import base64
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = REPO / ".venv" / "bin"
SECTION = '[plugins."io.containerd.grpc.v1.cri".registry]'


def play(tmp_path, config, expect_rc=0, *args):
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    variables = dict(image_mirror_registry="10.0.0.5:5000", image_mirror_ca_file=str(ca),
                     image_mirror_pull_user="puller", image_mirror_pull_password="pull-secret-value-123",
                     image_mirror_containerd_hosts_dir=str(tmp_path / "certs.d"),
                     image_mirror_containerd_config=str(config), image_mirror_containerd_restart=False)
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    (tmp_path / "play.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  roles: [llmops.onprem.image_mirror]\n")
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"))
    p = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e",
                        "ansible_python_interpreter=%s" % (VENV_BIN / "python"), "-e", "@%s" % (tmp_path / "vars.json"),
                        *args, str(tmp_path / "play.yml")], capture_output=True, text=True, env=env, cwd=str(REPO), check=False)
    out = p.stdout + p.stderr
    assert p.returncode == expect_rc, out[-5000:]
    assert "pull-secret-value-123" not in out
    assert base64.b64encode(b"puller:pull-secret-value-123").decode() not in out
    return out, int(re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", out).group(1))


@pytest.mark.parametrize("before", [
    'version = 2\n\n%s\n  config_path = ""\n\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "overlayfs"\n' % SECTION,
    'version = 2\n\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "overlayfs"\n',
    None,
], ids=["section with empty config_path", "no registry section", "no config.toml"])
def test_config_path_is_set_once(tmp_path, before):
    config = tmp_path / "config.toml"
    if before is not None:
        config.write_text(before)
    out, changed = play(tmp_path, config)
    assert changed > 0
    doc = tomllib.loads(config.read_text())
    assert doc["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["config_path"] == str(tmp_path / "certs.d")
    if before is not None and "snapshotter" in before:
        assert doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["snapshotter"] == "overlayfs"
    for upstream in ("docker.io", "public.ecr.aws", "nvcr.io", "registry.k8s.io", "quay.io", "ghcr.io"):
        hosts = tomllib.loads((tmp_path / "certs.d" / upstream / "hosts.toml").read_text())
        url = "https://10.0.0.5:5000/v2/" + upstream
        assert hosts["server"] == url and hosts["host"][url]["override_path"] is True
        assert hosts["host"][url]["ca"] == str(tmp_path / "certs.d" / "10.0.0.5:5000" / "ca.crt")
    site = tomllib.loads((tmp_path / "certs.d" / "10.0.0.5:5000" / "hosts.toml").read_text())
    assert site["server"] == "https://10.0.0.5:5000" and "override_path" not in site
    assert (tmp_path / "certs.d" / "10.0.0.5:5000" / "ca.crt").read_text().startswith("-----BEGIN CERTIFICATE")
    again, changed = play(tmp_path, config)
    assert changed == 0, again[-3000:]


def test_old_style_mirrors_are_refused(tmp_path):
    config = tmp_path / "config.toml"
    before = 'version = 2\n%s\n  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n    endpoint = ["https://x"]\n' % SECTION
    config.write_text(before)
    out, _changed = play(tmp_path, config, expect_rc=2)
    assert "configures registries under [plugins.\\\"io.containerd.grpc.v1.cri\\\".registry.mirrors] or .configs" in out \
        or 'configures registries under [plugins."io.containerd.grpc.v1.cri".registry.mirrors] or .configs' in out, out[-3000:]
    assert config.read_text() == before


def test_check_mode_predicts_and_writes_nothing(tmp_path):
    config = tmp_path / "config.toml"
    before = 'version = 2\n\n%s\n  config_path = ""\n' % SECTION
    config.write_text(before)
    out, changed = play(tmp_path, config, 0, "--check", "--diff")
    assert changed > 0
    assert config.read_text() == before and not (tmp_path / "certs.d").exists()
    assert "pull-secret-value-123" not in out
    play(tmp_path, config)
    out, changed = play(tmp_path, config, 0, "--check", "--diff")
    assert changed == 0, out[-3000:]
