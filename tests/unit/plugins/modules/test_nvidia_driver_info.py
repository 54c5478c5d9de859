"""nvidia_driver_info's pure parts: the decision from what was read, the version check, and the
parsers of lsmod and apt-cache policy. The module end to end, with the host's commands faked on
PATH, is in tests/integration/gpu/test_nvidia_driver_detect.py."""
import pytest

from ansible_collections.llmops.onprem.plugins.modules.nvidia_driver_info import (NVIDIA_PCI, accepted, candidates, decide,
                                                                                  loaded_modules, proc_modules, sysfs_pci)


def obs(**kw):
    o = dict(nvidia_loaded=True, nouveau_loaded=False, driver_version="570.124.06", pci_devices=["17:00.0 0302: 10de:2330"],
             gpu={"count": 8}, smi_error="")
    o.update(kw)
    return o


@pytest.mark.parametrize("o, state, reason", [
    (obs(), "present", "nvidia 570.124.06 is loaded and nvidia-smi lists 8 GPU(s)"),
    (obs(pci_devices=[], nvidia_loaded=False, driver_version="", gpu={}), "no_gpu", "no NVIDIA display or 3D controller"),
    (obs(driver_version="535.1"), "install", "nvidia-smi reports driver 535.1, older than the accepted 570"),
    (obs(nvidia_loaded=False, nouveau_loaded=True, driver_version=""), "install", "the nouveau module holds the GPU(s)"),
    (obs(nvidia_loaded=False, driver_version=""), "install", "1 NVIDIA device(s) on the PCI bus and the nvidia module is not loaded"),
    (obs(driver_version="", smi_error="nvidia-smi failed (rc 9): NVIDIA-SMI has failed"), "install",
     "the nvidia module is loaded but nvidia-smi does not answer: nvidia-smi failed (rc 9)"),
])
def test_decide(o, state, reason):
    got_state, got_reason = decide(o, "570")
    assert got_state == state
    assert got_reason.startswith(reason)


def test_present_needs_the_loaded_module_even_with_an_answer():
    # nvidia-smi answering from a container runtime's copy is not a loaded host driver.
    assert decide(obs(nvidia_loaded=False), "570")[0] == "install"


@pytest.mark.parametrize("version, minimum, ok", [
    ("570.124.06", "570", True), ("580.1", "570", True), ("565.9", "570", False), ("570.124.06", "570.124", True),
    ("570.86.10", "570.124", False), ("", "570", False), ("junk", "570", False)])
def test_accepted(version, minimum, ok):
    assert accepted(version, minimum) is ok


def test_loaded_modules_skip_the_header():
    assert loaded_modules("Module Size Used by\nnvidia_uvm 1 0\nnvidia 2 1\n\n") == {"nvidia_uvm", "nvidia"}


def test_candidates_from_apt_cache_policy():
    out = ("linux-headers-6.1.0-18-amd64:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n"
           "nvidia-driver:\n  Installed: (none)\n  Candidate: 535.216.01-1~deb12u1\n  Version table:\n"
           "     535.216.01-1~deb12u1 500\n        500 file:/var/lib/llmops/apt bookworm/main amd64 Packages\n")
    assert candidates(out) == {"linux-headers-6.1.0-18-amd64": None, "nvidia-driver": "535.216.01-1~deb12u1"}
    assert candidates("") == {}


@pytest.mark.parametrize("line, match", [
    ("17:00.0 0302: 10de:2330 (rev a1)", True), ("65:00.0 0300: 10de:1eb8 (rev a1)", True),
    ("17:00.1 0403: 10de:22bc (rev a1)", False),   # the GPU's audio function
    ("00:02.0 0300: 8086:4680", False)])
def test_nvidia_pci_lines(line, match):
    assert bool(NVIDIA_PCI.match(line)) is match


def test_sysfs_pci_reads_like_lspci(tmp_path):
    for dev, vendor, device, cls in (("0000:17:00.0", "0x10de", "0x2330", "0x030200"),
                                     ("0000:00:1f.3", "0x8086", "0x7a50", "0x040380")):
        d = tmp_path / dev
        d.mkdir()
        (d / "vendor").write_text(vendor + "\n")
        (d / "device").write_text(device + "\n")
        (d / "class").write_text(cls + "\n")
    (tmp_path / "0000:ff:00.0").mkdir()  # unreadable entries are skipped
    lines = sysfs_pci(str(tmp_path)).splitlines()
    assert lines == ["0000:00:1f.3 0403: 8086:7a50", "0000:17:00.0 0302: 10de:2330"]
    assert [ln for ln in lines if NVIDIA_PCI.match(ln)] == ["0000:17:00.0 0302: 10de:2330"]
    assert sysfs_pci(str(tmp_path / "absent")) == ""


def test_proc_modules_without_lsmod(tmp_path):
    f = tmp_path / "modules"
    f.write_text("nvidia_uvm 1531904 0 - Live 0x0000000000000000\nnvidia 54218752 1 nvidia_uvm, Live 0x0\n")
    assert proc_modules(str(f)) == {"nvidia_uvm", "nvidia"}
    with pytest.raises(Exception, match="neither lsmod nor .*absent can be read"):
        proc_modules(str(tmp_path / "absent"))


class _Host(object):
    """The commands observe() reads: {name: (rc, out, err)}; a name absent is not installed."""

    def __init__(self, **cmds):
        self.cmds, self.ran = cmds, []

    def run(self, name, args, required=True):
        self.ran.append(name)
        return self.cmds.get(name)


def test_without_an_nvidia_device_the_loaded_modules_are_not_read(monkeypatch):
    """A host (or container) without lsmod and without /proc/modules, and without an NVIDIA device, is no_gpu - not an
    error about the module list, which cannot matter there."""
    import ansible_collections.llmops.onprem.plugins.modules.nvidia_driver_info as m
    monkeypatch.setattr(m, "proc_modules", lambda path="/proc/modules": pytest.fail("the module list was read"))
    host = _Host(uname=(0, "6.1.0-50-amd64\n", ""), lspci=(0, "00:00.0 0600: 8086:1237 (rev 02)\n", ""))
    obs = m.observe(host, [], "linux-headers-")
    assert obs["pci_devices"] == [] and "lsmod" not in host.ran
    assert m.decide(obs, "535")[0] == "no_gpu"
    # With an NVIDIA device the module list is needed, and its absence is named.
    host = _Host(uname=(0, "6.1.0-50-amd64\n", ""), lspci=(0, "01:00.0 0302: 10de:2330 (rev a1)\n", ""))

    def unreadable(path="/proc/modules"):
        raise m.OnpremError("neither lsmod nor %s can be read: absent" % path, kind="input")

    monkeypatch.setattr(m, "proc_modules", unreadable)
    with pytest.raises(m.OnpremError, match="neither lsmod nor /proc/modules can be read"):
        m.observe(host, [], "linux-headers-")
