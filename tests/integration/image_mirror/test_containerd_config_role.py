"""The image_mirror role's config.toml edit (tasks_from: containerd_config, connection local, files under a
temporary directory) on the real `containerd config default` output of containerd 1.6, 1.7 and 2.x: config_path
lands in the CRI registry table, the transfer service's stays empty, the file keeps its mode, a backup of the old
text is left, and a second run changes nothing. Bad files are refused naming the file, and nothing is written."""
import importlib.util
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = REPO / ".venv" / "bin"
FIXTURES = REPO / "tests" / "unit" / "plugins" / "filter" / "fixtures"
_spec = importlib.util.spec_from_file_location("security_conftest", REPO / "tests" / "security" / "conftest.py")
_security = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_security)
snapshot = _security.snapshot

CRI_V2 = ("plugins", "io.containerd.grpc.v1.cri", "registry")
CRI_V3 = ("plugins", "io.containerd.cri.v1.images", "registry")
TRANSFER = ("plugins", "io.containerd.transfer.v1.local")


def play(tmp_path, config, expect_rc=0, *args):
    hosts = tmp_path / "certs.d"
    (tmp_path / "play.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role: {name: llmops.onprem.image_mirror, tasks_from: containerd_config}\n"
        "      vars: {image_mirror_containerd_config: '%s', image_mirror_containerd_hosts_dir: '%s',\n"
        "             image_mirror_containerd_restart: false}\n" % (config, hosts))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"))
    p = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e",
                        "ansible_python_interpreter=%s" % (VENV_BIN / "python"), *args, str(tmp_path / "play.yml")],
                       capture_output=True, text=True, env=env, cwd=str(REPO), check=False)
    out = p.stdout + p.stderr
    assert p.returncode == expect_rc, out[-5000:]
    return out, int(re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", out).group(1))


def get(doc, keys):
    for key in keys:
        doc = doc[key]
    return doc


@pytest.mark.parametrize("version, table, transfer", [
    ("1.6", CRI_V2, None), ("1.7", CRI_V2, TRANSFER), ("2.1", CRI_V3, TRANSFER)])
def test_real_default_config_gets_config_path_once(tmp_path, version, table, transfer):
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "config.toml"
    before = (FIXTURES / ("containerd-%s-default.toml" % version)).read_text()
    config.write_text(before)
    config.chmod(0o600)
    out, changed = play(tmp_path, config, 0, "--check", "--diff")
    assert changed == 1 and config.read_text() == before, out[-3000:]
    assert '+      config_path = "%s"' % (tmp_path / "certs.d") in out
    out, changed = play(tmp_path, config)
    assert changed == 1, out[-3000:]
    doc = tomllib.loads(config.read_text())
    assert get(doc, table)["config_path"] == str(tmp_path / "certs.d")
    if transfer:
        assert get(doc, transfer)["config_path"] == ""
    assert config.stat().st_mode & 0o777 == 0o600
    backups = [p for p in etc.iterdir() if p.name != "config.toml"]
    assert len(backups) == 1 and backups[0].name.startswith("config.toml.") and backups[0].read_text() == before
    after = config.read_text()
    for args in (["--check"], []):
        out, changed = play(tmp_path, config, 0, *args)
        assert changed == 0, out[-3000:]
    assert config.read_text() == after and len(list(etc.iterdir())) == 2


def test_missing_config_is_written(tmp_path):
    config = tmp_path / "etc" / "config.toml"
    config.parent.mkdir()
    out, changed = play(tmp_path, config)
    assert changed == 1, out[-3000:]
    text = config.read_text()
    assert text.startswith("# Written by llmops.onprem.image_mirror")
    assert get(tomllib.loads(text), CRI_V2) == {"config_path": str(tmp_path / "certs.d")}
    assert config.stat().st_mode & 0o777 == 0o644 and os.listdir(config.parent) == ["config.toml"]
    assert play(tmp_path, config)[1] == 0


@pytest.mark.parametrize("before, message", [
    ('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry\n  config_path = ""\n',
     "is not valid TOML (Unexpected character: '\\n' at line 2 col 45); containerd cannot read it either. Fix the "
     "file, or replace it with the output of 'containerd config default', then run again"),
    ('version = 2\n\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = ""\n'
     '  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n    endpoint = ["https://mirror.example"]\n',
     'configures registries under [plugins."io.containerd.grpc.v1.cri".registry.mirrors] or .configs (mirrors: '
     "docker.io); containerd refuses those together with config_path. Move them to hosts.toml files (the "
     "image_mirror role writes them) and remove them from config.toml"),
], ids=["not TOML", "legacy mirrors"])
def test_bad_config_is_refused_and_left_alone(tmp_path, before, message):
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "config.toml"
    config.write_text(before)
    was = snapshot(str(tmp_path))
    out, _changed = play(tmp_path, config, 2)
    assert ("image_mirror: %s on localhost %s" % (config, message)) in out, out[-3000:]
    assert config.read_text() == before
    assert {k: v for k, v in snapshot(str(tmp_path)).items() if k != "play.yml"} == \
        {k: v for k, v in was.items() if k != "play.yml"}
