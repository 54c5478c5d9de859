"""llmops.onprem.nvidia_driver's detection paths, on this machine, with every command the role
reads (uname, lspci, lsmod, nvidia-smi, mokutil, apt-cache) faked by scripts first on PATH:
driver present (nothing changes), no GPU (a report, a failure only when the inventory requires
a GPU), and a kernel the bundle has no headers for (refused before any change, naming the kernel
and the package). The install itself (DKMS building the module) needs a real GPU host and is
not run here (tests/gpu/check.sh, docs/gpu.md)."""
import os
import stat

from gpu_helpers import playbook

KERNEL = "6.1.0-18-amd64"
H100 = "17:00.0 0302: 10de:2330 (rev a1)"
SMI = "0, NVIDIA H100 80GB HBM3, 81559, 570.124.06, Disabled, 9.0\n1, NVIDIA H100 80GB HBM3, 81559, 570.124.06, Disabled, 9.0\n"
BLACKLIST = "/etc/modprobe.d/llmops-blacklist-nouveau.conf"


def fake_bin(tmp_path, lspci=(), modules=(), smi=None, secure_boot="SecureBoot disabled", policy=None):
    """Scripts standing in for the host's commands; smi None: no nvidia-smi on PATH."""
    d = tmp_path / "bin"
    d.mkdir()
    scripts = {
        "uname": "echo %s" % KERNEL,
        "lspci": "cat <<'X'\n00:00.0 0600: 8086:1237\n%s\nX" % "\n".join(lspci),
        "lsmod": "cat <<'X'\nModule Size Used by\next4 1 1\n%s\nX" % "\n".join("%s 1 0" % m for m in modules),
        "mokutil": "echo '%s'" % secure_boot,
        "apt-cache": "cat <<'X'\n%s\nX" % (policy or ""),
    }
    if smi is not None:
        scripts["nvidia-smi"] = "cat <<'X'\n%sX" % smi
    for name, body in scripts.items():
        p = d / name
        p.write_text("#!/bin/sh\n%s\n" % body)
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(d)


def policy(**candidates):
    return "\n".join("%s:\n  Installed: (none)\n  Candidate: %s\n  Version table:" % (k, v) for k, v in candidates.items())


def run(tmp_path, fake, **extra):
    vals = dict(gpu_fake_bin=fake, gpu_out=str(tmp_path / "out.json"))
    vals.update(extra)
    return playbook("nvidia_driver.yml", vals)


def test_driver_present_changes_nothing_and_exports_the_gpu_fact(tmp_path):
    fake = fake_bin(tmp_path, lspci=[H100], modules=["nvidia_uvm", "nvidia"], smi=SMI)
    proc, out = run(tmp_path, fake)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "changed=0" in proc.stdout
    status = out["status"]
    assert status["state"] == "present"
    assert status["driver_version"] == "570.124.06"
    assert status["reason"] == "nvidia 570.124.06 is loaded and nvidia-smi lists 2 GPU(s)"
    assert status["actions"] == []
    gpu = status["gpu"]
    assert (gpu["node"], gpu["product"], gpu["count"], gpu["memory_mib"], gpu["family"], gpu["mig_mode"]) == (
        "localhost", "NVIDIA-H100-80GB-HBM3", 2, 81559, "hopper", "Disabled")
    assert gpu["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert out["site"]["hosts"]["localhost"]["state"] == "present"
    assert not os.path.exists(BLACKLIST)


def test_driver_present_but_older_than_accepted_needs_an_install(tmp_path):
    old = SMI.replace("570.124.06", "535.161.08")
    fake = fake_bin(tmp_path, lspci=[H100], modules=["nvidia"], smi=old, policy=policy(**{"nvidia-driver": "535"}))
    proc, out = run(tmp_path, fake)
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert "nvidia-smi reports driver 535.161.08, older than the accepted 570" in text
    assert "linux-headers-%s" % KERNEL in text


def test_no_gpu_is_a_report_not_a_failure(tmp_path):
    fake = fake_bin(tmp_path)
    proc, out = run(tmp_path, fake)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "changed=0" in proc.stdout
    assert out["status"]["state"] == "no_gpu"
    assert out["status"]["reason"] == "no NVIDIA display or 3D controller (vendor 10de) on the PCI bus (lspci -n)"
    assert out["status"]["gpu"] == {}
    assert not os.path.exists(BLACKLIST)


def test_no_gpu_fails_when_the_inventory_requires_one(tmp_path):
    fake = fake_bin(tmp_path)
    proc, out = run(tmp_path, fake, gpu_require=True)
    assert proc.returncode != 0
    assert out is None
    text = " ".join(proc.stdout.split())
    assert "nvidia_driver: localhost has no NVIDIA GPU (no NVIDIA display or 3D controller" in text
    assert "nvidia_driver_require_gpu is true" in text


def test_missing_headers_refuses_before_any_change_naming_kernel_and_package(tmp_path):
    # The bundle's repository offers the driver packages but no headers for the running kernel.
    fake = fake_bin(tmp_path, lspci=[H100], modules=["nouveau"], secure_boot="SecureBoot enabled",
                    policy=policy(**{"nvidia-driver": "535.216.01-1~deb12u1", "nvidia-kernel-dkms": "535.216.01-1~deb12u1",
                                     "nvidia-smi": "535.216.01-1~deb12u1", "dkms": "3.0.10-8+deb12u1"}))
    proc, out = run(tmp_path, fake)
    assert proc.returncode != 0
    assert out is None
    text = " ".join(proc.stdout.split())
    assert "nvidia_driver: localhost runs kernel %s and needs the NVIDIA driver" % KERNEL in text
    assert "the package repositories (the bundle's) have no linux-headers-%s." % KERNEL in text
    assert "the bundle must carry linux-headers-%s" % KERNEL in text
    assert "Nothing was changed on the host." in text
    assert not os.path.exists(BLACKLIST)


def test_missing_driver_packages_are_all_named(tmp_path):
    fake = fake_bin(tmp_path, lspci=[H100], smi=None,
                    policy=policy(**{"linux-headers-%s" % KERNEL: "6.1.76-1", "dkms": "3.0.10-8+deb12u1"}))
    proc, out = run(tmp_path, fake)
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert "1 NVIDIA device(s) on the PCI bus and the nvidia module is not loaded" in text
    assert "have no nvidia-driver, nvidia-kernel-dkms, nvidia-smi." in text
    assert "must carry linux-headers" not in text
