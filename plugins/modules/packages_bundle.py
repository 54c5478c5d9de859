#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: packages_bundle
short_description: A signed local apt repository holding the full dependency closure of a package list
version_added: 0.1.0
description:
  - Connected side of the air-gap bundle. Resolves the closure of O(names) in a fresh container of
    the target distro (O(image), with the apt sources the image has) by asking apt itself
    (C(apt-get install -s)), so nothing is guessed; downloads exactly those C(.deb) files with
    C(apt-get install --download-only) into O(dest)C(/pool), and removes pool files that are no
    longer part of the closure.
  - Writes a flat apt repository in O(dest) - C(Packages) (C(apt-ftparchive)), C(Release) with its
    SHA256, C(InRelease) and C(Release.gpg) signed with an Ed25519 GPG key, the public key as the
    binary keyring C(llmops-archive-keyring.gpg) (for C(signed-by=)), and C(packages.lock) (the
    resolved C(name=version) list).
  - The signing key is made when O(key_dir) holds none (GnuPG home in O(key_dir)C(/gnupg), 0700).
  - Idempotent by content - the C(Release) date is kept while the index is unchanged, so an unchanged closure gives the same
    bytes and the repository is not re-signed; C(changed) reports downloads, removals and any index,
    key, lock or signature write.
  - A run plans first (the closure resolved in a container that downloads nothing, compared with O(dest)), and check
    mode reports that plan; a real run then carries it out, fetching in a second container only when pool files are
    missing, and refuses a closure that changed between the two (the image's apt sources moved on meanwhile).
  - The closure is relative to a host made from O(image) - packages the image already has are not
    bundled. Use an image as minimal as the site's hosts.
  - Runs on the controller (the connected side). Needs C(podman), C(apt-ftparchive) (Debian
    C(apt-utils)), C(gpg) and C(gpgv).
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Resolves the closure in a container (read-only) and compares it and the index with O(dest); downloads, writes and signs nothing.
  diff_mode:
    support: full
    details: The diff is the resolved closure (C(packages.lock)) before and after.
options:
  distro:
    description:
      - Target distro id, C(debian-12) form. Goes into the C(Release) label.
    type: str
    required: true
  image:
    description:
      - Container image of the target distro (with working apt sources) in which the closure is resolved.
    type: str
    required: true
  names:
    description:
      - Packages the site installs (C(name) or C(name=version)). Their dependencies are added by apt.
    type: list
    elements: str
    required: true
  dest:
    description:
      - Repository directory, normally C(<bundle>/packages/<distro>). Created when absent.
    type: path
    required: true
  key_dir:
    description:
      - Private directory on the controller for the archive signing key (C(gnupg/) inside, 0700). Back it up; keep it out of the bundle.
    type: path
    required: true
  podman:
    description:
      - podman executable.
    type: str
    default: podman
  network:
    description:
      - podman network for the resolving container (it must reach the image's apt sources). Default is podman's default network.
    type: str
  components:
    description:
      - Archive areas to resolve from, in place of the ones the image's apt sources name - for example
        C([main, contrib, non-free, non-free-firmware]) for Debian's NVIDIA driver packages. Default is the image's sources as they are.
    type: list
    elements: str
    version_added: 1.0.0
requirements:
  - podman, apt-ftparchive (apt-utils), gpg and gpgv on the controller
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Bundle the OS packages the site roles install
  llmops.onprem.packages_bundle:
    distro: debian-12
    image: docker.io/library/debian:12
    names: [redis-server, nginx, docker-registry, postgresql-15, python3-psycopg2]
    dest: "{{ bundle_dir }}/packages/debian-12"
    key_dir: "{{ inventory_dir }}/.private/bundle/apt"
  delegate_to: localhost
"""

RETURN = r"""
packages:
  description: The resolved closure, sorted by name.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "redis-server", "version": "5:7.0.15-1~deb12u1", "arch": "amd64", "filename": "redis-server_5%3a7.0.15-1~deb12u1_amd64.deb"}]
downloaded:
  description: Pool files fetched by this run (in check mode, that would be fetched).
  returned: always
  type: list
  elements: str
  sample: ["liblzf1_3.6-3_amd64.deb"]
removed:
  description: Pool files removed because they left the closure (in check mode, that would be removed).
  returned: always
  type: list
  elements: str
  sample: []
written:
  description: Repository files (re)written by this run (in check mode, that would be written).
  returned: always
  type: list
  elements: str
  sample: ["Packages", "Release", "InRelease", "Release.gpg", "packages.lock"]
key_fingerprint:
  description: Fingerprint of the archive signing key (null in check mode when the key would be made).
  returned: always
  type: str
  sample: 2B7A1D0C5E4F3A2B1C0D9E8F7A6B5C4D3E2F1A0B
key_generated:
  description: Whether the signing key was (or, in check mode, would be) made by this run.
  returned: always
  type: bool
  sample: false
total_bytes:
  description: Size of the pool after the run (in check mode, of the files present now).
  returned: always
  type: int
  sample: 1843200
"""

import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._debrepo import (
    INRELEASE, KEYRING, LOCK, PACKAGES, POOL, RELEASE, RELEASE_GPG, PackagesError, export_key, generate_key,
    input_problems, key_fingerprint, list_pool, packages_index, parse_closure, plan_pool, podman_resolve_argv,
    read_bytes, release_date, render_lock, render_release, sign_release, signatures_valid, stop_agent)
from ansible_collections.llmops.onprem.plugins.module_utils._files import write_atomic


def argument_spec():
    return dict(
        distro=dict(type="str", required=True),
        image=dict(type="str", required=True),
        names=dict(type="list", elements="str", required=True),
        dest=dict(type="path", required=True),
        key_dir=dict(type="path", required=True),
        podman=dict(type="str", default="podman"),
        network=dict(type="str"),
        components=dict(type="list", elements="str"),
    )


def resolve(run, p, pool=None):
    """Closure of p['names'] in a fresh container of p['image']; downloads into ``pool`` when given."""
    rc, out, err = run(podman_resolve_argv(p["podman"], p["image"], p["names"], pool=pool, network=p["network"],
                                           components=p.get("components")))
    if rc != 0:
        raise PackagesError("resolving the closure of %s in a container of %s failed (rc=%d): %s"
                            % (", ".join(p["names"]), p["image"], rc, err.strip()[-2000:]), rc=rc, stderr=err)
    return parse_closure(out)


def release_bytes(distro, index, old_release, now):
    return render_release(distro, index, release_date(old_release, distro, index, now)).encode()


def gather(run, p):
    """What plan() reads, all of it read-only: the signing key (and its public part), the repository's files and
    pool, the index of the pool as it is, and the closure resolved in a container (which downloads nothing)."""
    problems = input_problems(p["distro"], p["names"], p.get("components"))
    if problems:
        raise PackagesError("; ".join(problems))
    dest, homedir = p["dest"], os.path.join(p["key_dir"], "gnupg")
    fpr = key_fingerprint(run, homedir)
    closure = resolve(run, p)
    state = dict(key_fingerprint=fpr, public_key=export_key(run, homedir, fpr) if fpr else None,
                 present=list_pool(dest), closure=closure, now=time.time(),
                 files=dict((name, read_bytes(os.path.join(dest, name))) for name in (KEYRING, PACKAGES, RELEASE, LOCK)))
    state["index"] = packages_index(run, dest) if state["present"] else b""
    state["signatures_valid"] = signatures_valid(run, dest)
    return state


def plan(p, state):
    """What a run does, from gather()'s state alone (no I/O): the closure, the pool files to fetch and remove, the
    repository files to (re)write in the order apply() writes them, and whether the key is to be made. Check mode
    reports this; apply() carries it out. Packages and Release are rewritten whenever the pool changes (their
    content then depends on the fetched files); an unchanged pool keeps them when their bytes are current."""
    closure = state["closure"]
    if not closure:
        raise PackagesError("the image %s already has %s and all their dependencies installed: the closure is empty, "
                            "so the repository would be empty; use an image as minimal as the site's hosts"
                            % (p["image"], ", ".join(p["names"])))
    pool = plan_pool(closure, state["present"])
    files = state["files"]
    lock = render_lock(closure)
    generate = state["key_fingerprint"] is None
    written = []
    if generate or files[KEYRING] != state["public_key"]:
        written.append(KEYRING)
    if pool["missing"] or pool["stale"]:
        written += [PACKAGES, RELEASE]
    else:
        if files[PACKAGES] != state["index"]:
            written.append(PACKAGES)
        if files[RELEASE] != release_bytes(p["distro"], state["index"], files[RELEASE], state["now"]):
            written.append(RELEASE)
    if files[LOCK] != lock.encode():
        written.append(LOCK)
    if RELEASE in written or KEYRING in written or not state["signatures_valid"]:
        written += [INRELEASE, RELEASE_GPG]
    before_lock = (files[LOCK] or b"").decode("utf-8", "replace")
    return dict(closure=closure, lock=lock, downloaded=pool["missing"], removed=pool["stale"], written=written,
                generate_key=generate, key_fingerprint=state["key_fingerprint"], before_lock=before_lock, now=state["now"],
                changed=bool(pool["missing"] or pool["stale"] or written or generate))


def apply(run, p, todo):
    """Carry out plan()'s ``todo``: fetch the closure (a container with the pool mounted; it must resolve the same
    closure), remove what left it, make the key, write and sign exactly the files the plan names. A fetch that fails
    leaves no directory it made behind. Returns the key's fingerprint."""
    dest, homedir = p["dest"], os.path.join(p["key_dir"], "gnupg")
    pool = os.path.join(dest, POOL)
    made = [pool]
    while not os.path.isdir(os.path.dirname(made[0])):
        made.insert(0, os.path.dirname(made[0]))
    made = [d for d in made if not os.path.isdir(d)]
    for d in made:
        os.mkdir(d, 0o755)
    try:
        if todo["downloaded"]:
            closure = resolve(run, p, pool)
            if closure != todo["closure"]:
                raise PackagesError("the closure of %s changed while it was fetched (the image's apt sources moved on): "
                                    "planned %s, fetched %s; run again" % (", ".join(p["names"]), render_lock(
                                        todo["closure"]).split(), render_lock(closure).split()))
    except PackagesError:
        for d in reversed(made):  # a refused build leaves nothing behind
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)
        raise
    absent = [c["filename"] for c in todo["closure"] if not os.path.isfile(os.path.join(pool, c["filename"]))]
    if absent:
        raise PackagesError("apt reported the closure but did not download %s into %s" % (", ".join(absent), pool))
    fpr = generate_key(run, homedir) if todo["generate_key"] else todo["key_fingerprint"]
    for name in todo["removed"]:
        os.unlink(os.path.join(pool, name))
    for junk in ("partial", "lock"):
        path = os.path.join(pool, junk)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)
    index = packages_index(run, dest)
    for name in todo["written"]:
        if name == KEYRING:
            data = export_key(run, homedir, fpr)
        elif name == PACKAGES:
            data = index
        elif name == RELEASE:
            data = release_bytes(p["distro"], index, read_bytes(os.path.join(dest, RELEASE)), todo["now"])
        elif name == LOCK:
            data = todo["lock"].encode()
        else:
            continue  # InRelease and Release.gpg: signed below
        write_atomic(os.path.join(dest, name), data, mode=0o644)
    if INRELEASE in todo["written"]:
        sign_release(run, homedir, fpr, dest)
    return fpr


def run_module(run, p, check_mode):
    todo = plan(p, gather(run, p))
    fpr = todo["key_fingerprint"] if check_mode else apply(run, p, todo)
    pool = os.path.join(p["dest"], POOL)
    sizes = [os.path.getsize(os.path.join(pool, f)) for f in list_pool(p["dest"])] if os.path.isdir(pool) else []
    lock_path = os.path.join(p["dest"], LOCK)
    return dict(changed=todo["changed"], packages=todo["closure"], downloaded=todo["downloaded"], removed=todo["removed"],
                written=todo["written"], key_fingerprint=fpr, key_generated=todo["generate_key"], total_bytes=sum(sizes),
                diff=dict(before=todo["before_lock"], after=todo["lock"], before_header=lock_path, after_header=lock_path))


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)

    def run(argv, cwd=None, binary=False):
        return module.run_command(argv, cwd=cwd, encoding=None if binary else "utf-8")

    try:
        result = run_module(run, module.params, module.check_mode)
    except PackagesError as e:
        module.fail_json(msg=str(e), **e.details)
    finally:
        stop_agent(run, os.path.join(module.params["key_dir"], "gnupg"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
