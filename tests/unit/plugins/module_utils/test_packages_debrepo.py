"""Pure parts of the bundle's apt repository helpers (_debrepo)."""
import hashlib

from ansible_collections.llmops.onprem.plugins.module_utils import _debrepo as d

SIMULATE = """NOTE: This is only a simulation!
Reading package lists...
Inst libatomic1 (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Inst redis-tools (5:7.0.15-1~deb12u7 Debian:12.15/oldstable [amd64])
Inst nginx-common (1.22.1-9+deb12u9 Debian:12.15/oldstable [all])
Inst libssl3 [3.0.15-1~deb12u1] (3.0.17-1~deb12u3 Debian-Security:12/oldstable-security [amd64])
Inst libc6:amd64 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])
Conf libatomic1 (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
"""


def test_parse_closure_reads_every_inst_line_with_epochs_upgrades_and_arch_all():
    closure = d.parse_closure(SIMULATE)
    assert [(p["name"], p["version"], p["arch"]) for p in closure] == [
        ("libatomic1", "12.2.0-14+deb12u1", "amd64"),
        ("libc6", "2.36-9+deb12u14", "amd64"),
        ("libssl3", "3.0.17-1~deb12u3", "amd64"),
        ("nginx-common", "1.22.1-9+deb12u9", "all"),
        ("redis-tools", "5:7.0.15-1~deb12u7", "amd64"),
    ]
    assert closure[4]["filename"] == "redis-tools_5%3a7.0.15-1~deb12u7_amd64.deb"
    assert closure[3]["filename"] == "nginx-common_1.22.1-9+deb12u9_all.deb"


def test_lock_is_one_name_version_per_line():
    assert d.render_lock(d.parse_closure(SIMULATE)).splitlines()[-1] == "redis-tools=5:7.0.15-1~deb12u7"


def test_input_problems_name_each_bad_input():
    assert d.input_problems("debian-12", ["redis-server", "postgresql-15=15.14-0+deb12u1"]) == []
    assert d.input_problems("bookworm", []) == [
        "distro 'bookworm' is not of the form debian-12 / ubuntu-24.04",
        "names is empty: list the OS packages the site installs"]
    assert d.input_problems("debian-12", ["redis-server", "Bad Name", "-x"]) == ["not Debian package names: Bad Name, -x"]


def test_plan_pool_fetches_the_missing_and_drops_the_stale():
    closure = d.parse_closure(SIMULATE)
    present = ["libatomic1_12.2.0-14+deb12u1_amd64.deb", "old_1.0_amd64.deb"]
    plan = d.plan_pool(closure, present)
    assert plan["stale"] == ["old_1.0_amd64.deb"]
    assert "libatomic1_12.2.0-14+deb12u1_amd64.deb" not in plan["missing"]
    assert len(plan["missing"]) == 4


def test_release_carries_the_index_sha256_and_keeps_its_date_while_the_index_is_unchanged():
    index = b"Package: a\nVersion: 1\n\n"
    old = d.render_release("debian-12", index, "Mon, 02 Nov 2026 10:00:00 UTC").encode()
    assert (" %s %16d Packages\n" % (hashlib.sha256(index).hexdigest(), len(index))).encode() in old
    assert d.release_date(old, "debian-12", index, 0) == "Mon, 02 Nov 2026 10:00:00 UTC"
    assert d.release_date(old, "debian-12", index + b"Package: b\n\n", 0) == "Thu, 01 Jan 1970 00:00:00 UTC"
    assert d.release_date(None, "debian-12", index, 1795435200) == "Mon, 23 Nov 2026 12:00:00 UTC"


def test_packages_index_is_sorted_whatever_the_directory_order():
    text = ("Package: zlib1g\nVersion: 1\nFilename: pool/z.deb\n\n"
            "Package: apt\nVersion: 2\nFilename: pool/a.deb\n\n")
    assert d.sort_packages_index(text) == ("Package: apt\nVersion: 2\nFilename: pool/a.deb\n\n"
                                           "Package: zlib1g\nVersion: 1\nFilename: pool/z.deb\n\n")


def test_resolve_argv_mounts_the_pool_only_when_downloading():
    check = d.podman_resolve_argv("podman", "img:1", ["redis-server"])
    real = d.podman_resolve_argv("podman", "img:1", ["redis-server"], pool="/b/pool", network="net")
    assert "-v" not in check and check[-2:] == ["resolve", "redis-server"]
    assert real[real.index("-v") + 1] == "/b/pool:/out" and "DOWNLOAD=1" in real
    assert real[real.index("--network") + 1] == "net"


def test_components_replace_the_images_archive_areas_and_are_checked():
    argv = d.podman_resolve_argv("podman", "img:1", ["nvidia-kernel-dkms"], components=["main", "non-free"])
    assert argv[argv.index("-e") + 1] == "COMPONENTS=main non-free"
    assert not [a for a in d.podman_resolve_argv("podman", "img:1", ["x"]) if a.startswith("COMPONENTS=")]
    assert d.input_problems("debian-12", ["dkms"], ["main", "non-free-firmware"]) == []
    assert d.input_problems("debian-12", ["dkms"], ["main", "non free/", "$(id)"]) == [
        "not archive area names (main, contrib, non-free, non-free-firmware, universe, ...): non free/, $(id)"]


def test_the_resolve_script_rewrites_both_source_formats(tmp_path):
    """The script's sources rewrite, run by dash on copies of both formats (the rest of the script needs apt)."""
    import subprocess
    head = d.RESOLVE_SCRIPT.split("if ! apt-get update", 1)[0].replace("/etc/apt/", str(tmp_path) + "/")
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://deb.debian.org/debian bookworm main\n"
                                           "deb http://security.debian.org/debian-security bookworm-security main contrib\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text("Types: deb\nURIs: http://deb.debian.org/debian\n"
                                                                "Suites: bookworm\nComponents: main\n")
    p = subprocess.run(["sh", "-c", head], env={"COMPONENTS": "main non-free", "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "sources.list").read_text() == (
        "deb http://deb.debian.org/debian bookworm main non-free\n"
        "deb http://security.debian.org/debian-security bookworm-security main non-free\n")
    assert "Components: main non-free\n" in (tmp_path / "sources.list.d" / "debian.sources").read_text()


def test_write_if_changed_writes_only_different_bytes(tmp_path):
    path = str(tmp_path / "f")
    assert d.write_if_changed(path, b"a") is True
    assert d.write_if_changed(path, b"a") is False
    assert d.write_if_changed(path, b"b") is True
    assert open(path, "rb").read() == b"b"
