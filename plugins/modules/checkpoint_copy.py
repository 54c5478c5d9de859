#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: checkpoint_copy
short_description: Copy a model checkpoint into the bundle, checked as the site will check it
version_added: 1.0.0
description:
  - The connected side's half of the checkpoint rules. Lists O(src) with the same rule the site's
    M(llmops.onprem.checkpoint_verify) and M(llmops.onprem.checkpoint_sync) use - names starting with C(.)
    (C(.gitattributes), C(.cache/), C(.git/)) are not part of a checkpoint and are left out; a symbolic link that
    leaves O(src), dangles, or names a directory is refused, naming the link, before anything is read or copied.
  - Runs the checkpoint check (the Hugging Face layout checks of M(llmops.onprem.checkpoint_verify)) on O(src) and
    fails on the connected side, before the bundle is sealed, instead of at the site after the import.
  - Makes O(dest) hold exactly those files, compared by sha256 - copies what differs (each file written to a
    temporary name without following links, then renamed; mode 0644), removes anything else under O(dest), links
    and dot-files included - then checks O(dest) against the manifest of O(src) (every size and sha256), so the
    bundle's per-model manifest is the one the site verifies.
  - Check mode and diff report exactly what the real run copies and removes.
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: full
options:
  src:
    description:
      - The checkpoint directory (Hugging Face layout, uncompressed).
    type: path
    required: true
  dest:
    description:
      - The checkpoint's directory in the bundle (C(<bundle>/models/<name>)). Created when missing.
    type: path
    required: true
  layout:
    description:
      - Run the Hugging Face layout checks on O(src). Turn off only for checkpoints in another format.
    type: bool
    default: true
  require_tokenizer:
    description:
      - Require tokenizer files (as M(llmops.onprem.checkpoint_verify) O(llmops.onprem.checkpoint_verify#module:require_tokenizer)).
    type: bool
    default: true
  workers:
    description:
      - Files hashed in parallel.
    type: int
    default: 4
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Copy a checkpoint into the bundle
  llmops.onprem.checkpoint_copy:
    src: /data/models/qwen2.5-0.5b-instruct
    dest: /srv/bundle/models/qwen2.5-0.5b-instruct
"""

RETURN = r"""
copied:
  description: Files copied (in check mode, that would be), relative to O(dest).
  returned: always
  type: list
  elements: str
  sample: [model.safetensors]
removed:
  description: Entries under O(dest) that are not part of the checkpoint (dot-files, links, old files), removed.
  returned: always
  type: list
  elements: str
  sample: [.gitattributes]
files:
  description: Number of files in the checkpoint.
  returned: always
  type: int
  sample: 7
bytes:
  description: Size of the checkpoint.
  returned: always
  type: int
  sample: 988097824
manifest_digest:
  description: Digest of the checkpoint's manifest (what the site's checkpoints stage computes from the bundle).
  returned: always
  type: str
  sample: 3b1d5f0e4c9f7e8d2a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f
"""

import os
import shutil
import stat

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._checkpoint import (
    CheckpointError, check_layout, compare_with_manifest, manifest_digest, manifest_from_dir, open_inside)
from ansible_collections.llmops.onprem.plugins.module_utils._files import sha256_file, write_atomic


def argument_spec():
    return dict(
        src=dict(type="path", required=True),
        dest=dict(type="path", required=True),
        layout=dict(type="bool", default=True),
        require_tokenizer=dict(type="bool", default=True),
        workers=dict(type="int", default=4),
    )


def dest_state(dest):
    """{relative path: (kind, size)} of everything under dest, not following links; kind file, dir, link or other."""
    out = {}
    if not os.path.lexists(dest):
        return out
    if os.path.islink(dest) or not os.path.isdir(dest):
        raise CheckpointError("%s is not a directory (a link or a file stands where the bundle's checkpoint goes): "
                              "remove it" % dest)
    for dirpath, dirnames, filenames in os.walk(dest, followlinks=False):
        rel = os.path.relpath(dirpath, dest)
        for name in dirnames + filenames:
            key = name if rel == "." else "/".join(rel.split(os.sep) + [name])
            st = os.lstat(os.path.join(dirpath, name))
            kind = ("link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode)
                    else "file" if stat.S_ISREG(st.st_mode) else "other")
            out[key] = (kind, st.st_size)
    return out


def plan(manifest, state, dest_sha):
    """Pure: (files to copy, entries to remove) to make dest hold exactly the manifest's files.

    state: dest_state(); dest_sha(path) -> sha256 of a regular file of the right size under dest."""
    wanted = dict((f["path"], f) for f in manifest["files"])
    dirs = set()
    for path in wanted:
        parts = path.split("/")[:-1]
        dirs.update("/".join(parts[:i + 1]) for i in range(len(parts)))
    copy = [f["path"] for f in manifest["files"]
            if state.get(f["path"]) != ("file", f["size"]) or dest_sha(f["path"]) != f["sha256"]]
    remove = sorted(p for p, (kind, _s) in state.items()
                    if not (p in wanted and kind == "file") and not (p in dirs and kind == "dir"))
    # A removed directory takes what is under it along: name only the top.
    top = [p for p in remove if not any(p.startswith(q + "/") for q in remove)]
    return copy, top


def copy_file(src, dest, rel):
    """src/rel to dest/rel: read without leaving src, written to a fresh temporary name without following links."""
    # A checkpoint may hold a file named X.tmp: the temporary name is one no checkpoint file ends with.
    with open_inside(src, rel) as fin:
        write_atomic(os.path.join(dest, rel), fin, mode=0o644, fsync=False, suffix=".llmops-tmp")


def apply(src, dest, copy, remove):
    os.makedirs(dest, mode=0o755, exist_ok=True)
    for rel in remove:
        path = os.path.join(dest, rel)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    for rel in copy:
        cur = dest
        for part in rel.split("/")[:-1]:
            cur = os.path.join(cur, part)
            if not os.path.isdir(cur):   # after the removals, nothing but real directories is left on the way
                os.mkdir(cur, 0o755)
        copy_file(src, dest, rel)


def run(p, check_mode):
    src, dest = p["src"], p["dest"]
    workers = max(1, p["workers"])
    # The listing rule (no dot-files, no link out of src) runs first, inside manifest_from_dir.
    manifest = manifest_from_dir(src, os.path.basename(os.path.normpath(dest)), workers)
    problems = check_layout(src, p["require_tokenizer"]) if p["layout"] else []
    if problems:
        raise CheckpointError("checkpoint %s is not usable, so it is not put into the bundle (the site would refuse it "
                              "after the import): %s" % (src, " | ".join(problems)), problems)
    state = dest_state(dest)
    copy, remove = plan(manifest, state, lambda rel: sha256_file(os.path.join(dest, rel)))
    changed = bool(copy or remove or not os.path.isdir(dest))
    if changed and not check_mode:
        apply(src, dest, copy, remove)
    if not check_mode or not changed:
        found, _hashed = compare_with_manifest(dest, manifest, workers=workers, hash_contents=True)
        if found:
            raise CheckpointError("the bundle's copy %s of %s does not match it: %s" % (dest, src, " | ".join(found)),
                                  found)
    before = dict((k, v[0]) for k, v in state.items() if v[0] != "dir")
    after = dict((f["path"], f["sha256"]) for f in manifest["files"])
    return dict(changed=changed, copied=copy, removed=remove, files=len(manifest["files"]),
                bytes=sum(f["size"] for f in manifest["files"]), manifest_digest=manifest_digest(manifest),
                diff=dict(before=dict(files=before), after=dict(files=after)))


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = run(module.params, module.check_mode)
    except CheckpointError as e:
        module.fail_json(msg=str(e), **e.details)
    except OSError as e:
        module.fail_json(msg="cannot copy %s to %s: %s" % (module.params["src"], module.params["dest"], e))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
