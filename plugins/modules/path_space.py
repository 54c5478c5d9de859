#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: path_space
short_description: Free space of the filesystem each path is (or will be) on, and what the path already holds
version_added: 1.0.0
description:
  - Reads, and changes nothing. For each path of O(paths) it finds the path itself or, when the path does not exist yet,
    its nearest existing parent (the directory a later stage would create it in), and reports the filesystem that
    holds it - its mount point, device number, the bytes free to an unprivileged user (C(statvfs) C(f_bavail)) and
    its size.
  - With O(measure_used) it also adds up the apparent size of the regular files under each existing path, without
    following links or crossing into another filesystem - what a re-run finds already in place.
  - The preflight role feeds the result to the P(llmops.onprem.capacity_plan#filter) filter.
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: none
options:
  paths:
    description: Absolute paths (files or directories, existing or not).
    type: list
    elements: path
    required: true
  measure_used:
    description: Add up the bytes of the regular files already under each existing path (a walk of the tree).
    type: bool
    default: false
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Free space where the package repository and the registry storage will be
  llmops.onprem.path_space:
    paths: [/var/lib/llmops/apt, /var/lib/docker-registry]
    measure_used: true
  register: space
"""

RETURN = r"""
paths:
  description: One entry per path of O(paths), in order.
  returned: success
  type: list
  elements: dict
  contains:
    path:
      description: The path asked about.
      type: str
    exists:
      description: Whether the path exists.
      type: bool
    checked:
      description: The path whose filesystem was read (the path, or its nearest existing parent).
      type: str
    mount:
      description: Mount point of that filesystem.
      type: str
    device:
      description: Device number of that filesystem (two paths on the same filesystem share it).
      type: int
    free:
      description: Bytes free to an unprivileged user.
      type: int
    size:
      description: Size of the filesystem in bytes.
      type: int
    used:
      description: Bytes of the regular files under the path (0 when it does not exist; null without O(measure_used)).
      type: int
  sample: [{path: /var/lib/llmops/apt, exists: false, checked: /var/lib, mount: /, device: 64769,
            free: 52613349376, size: 105088212992, used: 0}]
"""

import os
import stat

from ansible.module_utils.basic import AnsibleModule


def nearest_existing(path):
    """The path itself when it exists (a link is not followed), else its nearest existing parent."""
    p = os.path.normpath(path)
    while True:
        try:
            os.lstat(p)
            return p
        except FileNotFoundError:
            parent = os.path.dirname(p)
            if parent == p:
                return p
            p = parent


def mount_point(path):
    p = os.path.realpath(path)
    while not os.path.ismount(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def used_bytes(path):
    """Apparent bytes of the regular files under path, on its own filesystem only, no link followed."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    dev, total = st.st_dev, 0
    for root, dirs, files in os.walk(path, onerror=None, followlinks=False):
        keep = []
        for d in dirs:
            try:
                if os.lstat(os.path.join(root, d)).st_dev == dev:
                    keep.append(d)
            except OSError:
                pass
        dirs[:] = keep
        for f in files:
            try:
                fst = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            if stat.S_ISREG(fst.st_mode):
                total += fst.st_size
    return total


def space(path, measure_used=False):
    checked = nearest_existing(path)
    exists = checked == os.path.normpath(path)
    # A link or a file is read through its directory's filesystem (statvfs follows links).
    target = checked if os.path.isdir(checked) else os.path.dirname(checked) or "/"
    vfs = os.statvfs(target)
    out = {"path": path, "exists": exists, "checked": checked, "mount": mount_point(target), "device": os.stat(target).st_dev,
           "free": vfs.f_bavail * vfs.f_frsize, "size": vfs.f_blocks * vfs.f_frsize, "used": None}
    if measure_used:
        out["used"] = used_bytes(checked) if exists else 0
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(paths=dict(type="list", elements="path", required=True),
                           measure_used=dict(type="bool", default=False)),
        supports_check_mode=True,
    )
    bad = [p for p in module.params["paths"] if not os.path.isabs(p)]
    if bad:
        module.fail_json(msg="path_space: paths must be absolute, got %s" % ", ".join(bad))
    try:
        result = [space(p, module.params["measure_used"]) for p in module.params["paths"]]
    except OSError as e:
        module.fail_json(msg="path_space: cannot read the filesystem of a path: %s" % e)
    module.exit_json(changed=False, paths=result)


if __name__ == "__main__":
    main()
