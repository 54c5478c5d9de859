"""containerd_config_path: config_path lands in the CRI registry table of containerd 1.6, 1.7 and 2.x, against
each version's real `containerd config default` output (fixtures/), and nowhere else."""
import os
import re
import shutil
import subprocess
import tomllib

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.containerd_config import containerd_config_path

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
HOSTS = "/etc/containerd/certs.d"
NAME = "/etc/containerd/config.toml on node-1"
CRI_V2 = ("plugins", "io.containerd.grpc.v1.cri", "registry")
CRI_V3 = ("plugins", "io.containerd.cri.v1.images", "registry")
TRANSFER = ("plugins", "io.containerd.transfer.v1.local")
# fixture -> the table containerd reads config_path from, and the transfer table that has its own config_path
DEFAULTS = {"1.6": (CRI_V2, None), "1.7": (CRI_V2, TRANSFER), "2.1": (CRI_V3, TRANSFER)}


def fixture(version):
    with open(os.path.join(FIXTURES, "containerd-%s-default.toml" % version)) as f:
        return f.read()


def get(doc, keys):
    for key in keys:
        doc = doc[key]
    return doc


def config_paths(doc, path=()):
    """Every (table, value) of a config_path key in the parsed document."""
    found = []
    for key, value in doc.items():
        if isinstance(value, dict):
            found += config_paths(value, path + (key,))
        elif key == "config_path":
            found.append((path, value))
    return found


@pytest.mark.parametrize("version", sorted(DEFAULTS))
def test_default_config_gets_config_path_in_the_cri_registry_table_only(version):
    before = fixture(version)
    table, transfer = DEFAULTS[version]
    assert get(tomllib.loads(before), table)["config_path"] == ""
    after = containerd_config_path(before, HOSTS, NAME)
    doc = tomllib.loads(after)
    assert get(doc, table)["config_path"] == HOSTS
    assert [t for t, v in config_paths(doc) if v == HOSTS] == [table]
    if transfer:
        assert get(doc, transfer)["config_path"] == ""
    # one line changed, everything else (comments, order, quoting, the empty mirrors/configs tables) kept
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines()) and len(changed) == 1
    assert changed[0][0].strip() in ('config_path = ""', "config_path = ''")
    assert changed[0][1] == changed[0][0].split("config_path")[0] + 'config_path = "%s"' % HOSTS
    assert after.startswith("# Verbatim output of `containerd config default`")


@pytest.mark.parametrize("version", sorted(DEFAULTS))
def test_second_application_returns_the_same_text(version):
    once = containerd_config_path(fixture(version), HOSTS, NAME)
    assert containerd_config_path(once, HOSTS, NAME) is once


def test_another_config_path_is_replaced():
    before = fixture("1.7").replace('[plugins."io.containerd.grpc.v1.cri".registry]\n      config_path = ""',
                                    '[plugins."io.containerd.grpc.v1.cri".registry]\n      config_path = "/etc/other"')
    assert before != fixture("1.7")
    doc = tomllib.loads(containerd_config_path(before, HOSTS, NAME))
    assert get(doc, CRI_V2)["config_path"] == HOSTS and get(doc, TRANSFER)["config_path"] == ""


def test_the_old_lineinfile_edit_hits_the_transfer_table_in_1_7():
    """What the role did before: lineinfile regexp '^\\s*config_path\\s*=' replaces the LAST matching line."""
    lines = fixture("1.7").splitlines(keepends=True)
    last = [i for i, line in enumerate(lines) if re.match(r"^\s*config_path\s*=", line)][-1]
    lines[last] = '    config_path = "%s"\n' % HOSTS
    doc = tomllib.loads("".join(lines))
    assert get(doc, CRI_V2)["config_path"] == ""           # the CRI plugin never sees the mirrors
    assert get(doc, TRANSFER)["config_path"] == HOSTS
    assert config_paths(tomllib.loads(containerd_config_path(fixture("1.7"), HOSTS, NAME))) != config_paths(doc)


@pytest.mark.parametrize("version", sorted(DEFAULTS))
def test_a_missing_registry_table_is_created(version):
    table, transfer = DEFAULTS[version]
    before = "".join(line for line in fixture(version).splitlines(keepends=True)
                     if not re.match(r"\s*\[plugins\.[\"']io\.containerd\.(grpc\.v1\.cri|cri\.v1\.images)[\"']\.registry", line)
                     and line.strip() not in ('config_path = ""', "config_path = ''"))
    assert "registry" not in get(tomllib.loads(before), table[:2])
    after = containerd_config_path(before, HOSTS, NAME)
    doc = tomllib.loads(after)
    assert get(doc, table) == {"config_path": HOSTS}
    assert containerd_config_path(after, HOSTS, NAME) is after


@pytest.mark.parametrize("before, table", [
    ("", CRI_V2),
    ("# nothing here yet\n", CRI_V2),
    ('version = 2\n\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "overlayfs"\n', CRI_V2),
    ("version = 3\n\n[plugins.'io.containerd.cri.v1.runtime']\n  enable_selinux = false\n", CRI_V3),
    ('version = 2\nroot = "/var/lib/containerd"\n', CRI_V2),
], ids=["no file", "comments only", "v2 without registry", "v3 without images plugin", "v2 without plugins"])
def test_small_configs(before, table):
    after = containerd_config_path(before, HOSTS, NAME)
    doc = tomllib.loads(after)
    assert doc["version"] == (3 if table == CRI_V3 else 2)
    assert config_paths(doc) == [(table, HOSTS)]
    if "snapshotter" in before:
        assert doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["snapshotter"] == "overlayfs"
    if not before:
        assert after.startswith("# Written by llmops.onprem.image_mirror")
    assert containerd_config_path(after, HOSTS, NAME) is after


def test_a_table_given_explicitly_is_used():
    after = containerd_config_path(fixture("1.6"), HOSTS, NAME, "plugins.'io.containerd.grpc.v1.cri'.registry")
    assert config_paths(tomllib.loads(after)) == [(CRI_V2, HOSTS)]


def test_legacy_mirrors_are_refused():
    before = fixture("1.7").replace(
        '[plugins."io.containerd.grpc.v1.cri".registry.mirrors]\n',
        '[plugins."io.containerd.grpc.v1.cri".registry.mirrors]\n\n'
        '        [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n'
        '          endpoint = ["https://mirror.example"]\n')
    assert before != fixture("1.7")
    with pytest.raises(AnsibleFilterError) as e:
        containerd_config_path(before, HOSTS, NAME)
    assert str(e.value) == (
        '/etc/containerd/config.toml on node-1 configures registries under [plugins."io.containerd.grpc.v1.cri".registry'
        '.mirrors] or .configs (mirrors: docker.io); containerd refuses those together with config_path. Move them to '
        "hosts.toml files (the image_mirror role writes them) and remove them from config.toml")


def test_legacy_configs_are_refused_in_a_v3_file():
    before = fixture("2.1") + ("\n[plugins.'io.containerd.cri.v1.images'.registry.configs.'registry.example:5000'.tls]\n"
                               "  insecure_skip_verify = true\n")
    with pytest.raises(AnsibleFilterError, match=re.escape(
            "configures registries under [plugins.\"io.containerd.cri.v1.images\".registry.mirrors] or .configs "
            "(configs: registry.example:5000); containerd refuses those together with config_path.")):
        containerd_config_path(before, HOSTS, NAME)


@pytest.mark.parametrize("before, message", [
    ('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry\n  config_path = ""\n',
     "/etc/containerd/config.toml on node-1 is not valid TOML (Unexpected character: '\\n' at line 2 col 45); "
     "containerd cannot read it either. Fix the file, or replace it with the output of 'containerd config default', "
     "then run again"),
    ('version = 2\nversion = 2\n',
     "/etc/containerd/config.toml on node-1 is not valid TOML (Key \"version\" already exists. at line 2 col 0); containerd cannot read "
     "it either. Fix the file, or replace it with the output of 'containerd config default', then run again"),
    ('[plugins.cri.registry]\n  config_path = ""\n',
     "/etc/containerd/config.toml on node-1 has no 'version' key: it is a containerd config version 1 file, whose "
     "plugin names (plugins.cri) containerd 2.x no longer reads. Convert it with 'containerd config migrate' "
     "(containerd 1.7 and later) or replace it with the output of 'containerd config default', then run again"),
    ('version = 4\n',
     "/etc/containerd/config.toml on node-1 has config version 4; this filter knows version 2 (containerd 1.6 and 1.7) "
     "and 3 (containerd 2.x). Check the file against 'containerd config default' of the node's containerd"),
    ('version = 2\n[plugins]\n"io.containerd.grpc.v1.cri" = "off"\n',
     '/etc/containerd/config.toml on node-1 sets plugins."io.containerd.grpc.v1.cri" to a String, not a table; '
     "containerd cannot read it either. Fix the file, then run again"),
], ids=["unclosed table header", "duplicate key", "version 1", "unknown version", "plugin not a table"])
def test_bad_configs_are_refused_naming_the_file(before, message):
    with pytest.raises(AnsibleFilterError) as e:
        containerd_config_path(before, HOSTS, NAME)
    assert str(e.value) == message


@pytest.mark.skipif(not shutil.which("containerd"), reason="no containerd binary on this machine")
def test_the_local_containerd_reads_config_path_from_the_result(tmp_path):
    """The real daemon's parser (no daemon started): `containerd config default`, the filter, `containerd config dump`."""
    default = subprocess.run(["containerd", "config", "default"], capture_output=True, text=True, check=True).stdout
    config = tmp_path / "config.toml"
    config.write_text(containerd_config_path(default, HOSTS, NAME))
    dump = subprocess.run(["containerd", "--config", str(config), "config", "dump"], capture_output=True, text=True,
                          check=True).stdout
    doc = tomllib.loads(dump)
    table = CRI_V3 if doc["version"] == 3 else CRI_V2
    assert [t for t, v in config_paths(doc) if v == HOSTS] == [table]
