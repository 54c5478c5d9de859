#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: nvidia_driver_info
short_description: Find out whether a host has NVIDIA GPUs and a working driver, and what installing one needs
version_added: 1.0.0
description:
  - Reads, and changes nothing - C(uname -r) (the running kernel), C(lspci -n) (NVIDIA display and 3D controllers on
    the PCI bus, vendor C(10de); C(/sys/bus/pci/devices) on a host without pciutils), C(lsmod) (C(nvidia) and
    C(nouveau) loaded; C(/proc/modules) without kmod), C(nvidia-smi) (one query, the GPU facts),
    C(mokutil --sb-state) (Secure Boot) and, when a driver must be installed, C(apt-cache policy) for the kernel headers
    of the running kernel and every package of O(packages) (is there a candidate in the configured repositories).
  - Returns RV(state) - C(present) (the C(nvidia) module is loaded and C(nvidia-smi) answers with a version of at least
    O(min_version); nothing to do), C(no_gpu) (no NVIDIA device on the PCI bus), or C(install) (a GPU, and no working
    driver of an accepted version), with RV(missing_packages) naming what the repositories cannot provide.
  - The nvidia_driver role runs it before and after installing; C(install) after an install means a reboot is needed.
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: none
options:
  min_version:
    description: The oldest accepted driver version (C(570), C(570.124)); an older working driver counts as absent.
    type: str
    default: "570"
  packages:
    description: The driver packages to check for a candidate when a driver is to be installed.
    type: list
    elements: str
    default: []
  headers_prefix:
    description: The kernel headers package is this prefix followed by the running kernel's release.
    type: str
    default: linux-headers-
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Look at the host's GPUs and driver
  llmops.onprem.nvidia_driver_info:
    min_version: "570"
    packages: [nvidia-driver, nvidia-kernel-dkms, nvidia-smi, dkms]
  register: gpu_host
"""

RETURN = r"""
state:
  description: C(present), C(no_gpu) or C(install).
  type: str
  returned: always
  sample: present
reason:
  description: One sentence saying why RV(state) is what it is.
  type: str
  returned: always
  sample: "nvidia 570.124.06 is loaded and nvidia-smi lists 8 GPUs"
kernel:
  description: The running kernel (C(uname -r)).
  type: str
  returned: always
  sample: 6.1.0-18-amd64
headers_package:
  description: The kernel headers package for the running kernel.
  type: str
  returned: always
  sample: linux-headers-6.1.0-18-amd64
pci_devices:
  description: The NVIDIA display/3D controllers on the PCI bus (C(lspci -n) lines).
  type: list
  elements: str
  returned: always
  sample: ["17:00.0 0302: 10de:2330 (rev a1)"]
nvidia_loaded:
  description: Whether the C(nvidia) kernel module is loaded.
  type: bool
  returned: always
nouveau_loaded:
  description: Whether the C(nouveau) kernel module is loaded (it holds the GPU until a reboot after the blacklist).
  type: bool
  returned: always
driver_version:
  description: The version C(nvidia-smi) reports, empty when it does not answer.
  type: str
  returned: always
  sample: 570.124.06
smi_error:
  description: Why C(nvidia-smi) gave no facts (not installed, its error), empty when it answered.
  type: str
  returned: always
gpu:
  description: The node's GPU fact from C(nvidia-smi) (see the filter C(llmops.onprem.gpu_node_facts)); empty when none.
  type: dict
  returned: always
secure_boot:
  description: C(enabled), C(disabled) or C(unknown) (no C(mokutil)).
  type: str
  returned: always
missing_packages:
  description: With RV(state=install), the packages (the headers first) that no configured repository offers.
  type: list
  elements: str
  returned: always
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
from ansible_collections.llmops.onprem.plugins.module_utils._gpu import SMI_ARGS, facts_from_smi

NVIDIA_PCI = re.compile(r"^\S+\s+(0300|0302):\s+10de:", re.IGNORECASE)


def version_tuple(text):
    return tuple(int(x) for x in re.findall(r"\d+", text or ""))


def accepted(version, min_version):
    v, m = version_tuple(version), version_tuple(min_version)
    return bool(v) and v[:len(m)] >= m


def loaded_modules(lsmod_out):
    return set(line.split()[0] for line in lsmod_out.splitlines()[1:] if line.strip())


def proc_modules(path="/proc/modules"):
    """The loaded modules from /proc/modules (hosts without kmod's lsmod; no header line)."""
    try:
        with open(path) as f:
            return loaded_modules("header\n" + f.read())
    except OSError as e:
        raise OnpremError("neither lsmod nor %s can be read: %s" % (path, e), kind="input")


def candidates(policy_out):
    """{package: candidate version or None} from ``apt-cache policy PKG...``."""
    out, current = {}, None
    for line in policy_out.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            current = line.rstrip()[:-1]
            out[current] = None
        elif current and line.strip().startswith("Candidate:"):
            cand = line.split(":", 1)[1].strip()
            out[current] = None if cand in ("(none)", "") else cand
    return out


def decide(obs, min_version):
    """state and reason from what was read (pure)."""
    if obs["nvidia_loaded"] and obs["driver_version"] and accepted(obs["driver_version"], min_version):
        return "present", "nvidia %s is loaded and nvidia-smi lists %d GPU(s)" % (
            obs["driver_version"], (obs["gpu"] or {}).get("count", 0))
    if not obs["pci_devices"]:
        return "no_gpu", "no NVIDIA display or 3D controller (vendor 10de) on the PCI bus (lspci -n)"
    if obs["driver_version"] and not accepted(obs["driver_version"], min_version):
        return "install", "nvidia-smi reports driver %s, older than the accepted %s" % (obs["driver_version"], min_version)
    if obs["nouveau_loaded"]:
        return "install", "the nouveau module holds the GPU(s); the NVIDIA driver is not loaded"
    if not obs["nvidia_loaded"]:
        return "install", "%d NVIDIA device(s) on the PCI bus and the nvidia module is not loaded" % len(obs["pci_devices"])
    return "install", "the nvidia module is loaded but nvidia-smi does not answer: %s" % obs["smi_error"]


class Host(object):
    """The commands the module reads, found on PATH (and the sbin directories)."""

    def __init__(self, module):
        self.module = module

    def run(self, name, args, required=True):
        path = self.module.get_bin_path(name, required=False)
        if not path:
            if required:
                raise OnpremError("%s is not installed on this host; it is needed to find the GPUs (install %s)"
                                  % (name, {"lspci": "pciutils", "lsmod": "kmod"}.get(name, name)), kind="input")
            return None
        rc, out, err = self.module.run_command([path] + args)
        return rc, out, err


def sysfs_pci(root="/sys/bus/pci/devices"):
    """The PCI devices as ``lspci -n`` lines, from sysfs (hosts without pciutils)."""
    lines = []
    for dev in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, dev, "vendor")) as f:
                vendor = f.read().strip().replace("0x", "")
            with open(os.path.join(root, dev, "device")) as f:
                device = f.read().strip().replace("0x", "")
            with open(os.path.join(root, dev, "class")) as f:
                cls = f.read().strip().replace("0x", "")[:4]
        except OSError:
            continue
        lines.append("%s %s: %s:%s" % (dev, cls, vendor, device))
    return "\n".join(lines)


def loaded_kernel_modules(host):
    """The loaded modules, from lsmod or, without kmod, /proc/modules."""
    lsmod = host.run("lsmod", [], required=False)
    if lsmod is None:
        return proc_modules()
    if lsmod[0] != 0:
        raise OnpremError("lsmod failed (rc %d): %s" % (lsmod[0], lsmod[2].strip()), kind="input")
    return loaded_modules(lsmod[1])


def observe(host, packages, headers_prefix):
    rc, kernel, err = host.run("uname", ["-r"])
    if rc != 0:
        raise OnpremError("uname -r failed: %s" % err.strip(), kind="input")
    kernel = kernel.strip()
    lspci = host.run("lspci", ["-n"], required=False)
    if lspci is None:
        out = sysfs_pci()
    elif lspci[0] != 0:
        raise OnpremError("lspci -n failed (rc %d): %s" % (lspci[0], lspci[2].strip()), kind="input")
    else:
        out = lspci[1]
    pci = [ln.strip() for ln in out.splitlines() if NVIDIA_PCI.match(ln.strip())]
    mods = loaded_kernel_modules(host) if pci else set()  # no NVIDIA device: no module can matter
    obs = dict(kernel=kernel, headers_package=headers_prefix + kernel, pci_devices=pci,
               nvidia_loaded="nvidia" in mods, nouveau_loaded="nouveau" in mods, driver_version="", gpu={},
               smi_error="", secure_boot="unknown", missing_packages=[])
    smi = host.run("nvidia-smi", SMI_ARGS, required=False)
    if smi is None:
        obs["smi_error"] = "nvidia-smi is not installed"
    elif smi[0] != 0:
        obs["smi_error"] = "nvidia-smi failed (rc %d): %s" % (smi[0], (smi[2] or smi[1]).strip())
    else:
        try:
            fact = facts_from_smi(smi[1])
        except OnpremError as e:
            fact, obs["smi_error"] = None, str(e)
        if fact:
            obs["gpu"], obs["driver_version"] = fact, fact["driver_version"]
        elif not obs["smi_error"]:
            obs["smi_error"] = "nvidia-smi lists no GPU"
    sb = host.run("mokutil", ["--sb-state"], required=False)
    if sb is not None:
        text = (sb[1] + sb[2]).lower()
        obs["secure_boot"] = "enabled" if "secureboot enabled" in text else "disabled" if "secureboot disabled" in text \
            else "unknown"
    return obs


def check_packages(host, obs, packages):
    wanted = [obs["headers_package"]] + [p for p in packages if p != obs["headers_package"]]
    rc, out, err = host.run("apt-cache", ["policy"] + wanted)
    if rc != 0:
        raise OnpremError("apt-cache policy failed (rc %d): %s" % (rc, err.strip()), kind="input")
    cands = candidates(out)
    return [p for p in wanted if not cands.get(p)]


def main():
    module = AnsibleModule(
        argument_spec=dict(min_version=dict(type="str", default="570"),
                           packages=dict(type="list", elements="str", default=[]),
                           headers_prefix=dict(type="str", default="linux-headers-")),
        supports_check_mode=True)
    p = module.params
    host = Host(module)
    try:
        obs = observe(host, p["packages"], p["headers_prefix"])
        state, reason = decide(obs, p["min_version"])
        if state == "install":
            obs["missing_packages"] = check_packages(host, obs, p["packages"])
    except OnpremError as e:
        module.fail_json(msg="nvidia_driver_info: %s" % e, **e.details)
    module.exit_json(changed=False, state=state, reason=reason, **obs)


if __name__ == "__main__":
    main()
