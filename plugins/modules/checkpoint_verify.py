#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: checkpoint_verify
short_description: Check that a directory holds a usable Hugging Face model checkpoint
version_added: 0.1.0
description:
  - Reads the structure of the checkpoint, not just its file names, and fails listing every problem found.
  - C(config.json) must parse as a JSON object.
  - Every C(*.safetensors) file must have a parseable header (8-byte little-endian length, JSON), each tensor's
    C(data_offsets) must match its dtype and shape, the tensors must tile the data section, and the file size must be
    exactly 8 + header length + end of the last tensor (a truncated or padded shard is refused).
  - C(model.safetensors.index.json), when present, must name only shards that exist, every shard that exists, and
    map each tensor to a shard whose header holds it. Several shards without an index are refused.
  - A tokenizer must be present - C(tokenizer.json) (fast tokenizer), C(tokenizer.model) (sentencepiece),
    C(vocab.json) with C(merges.txt) (GPT-2 BPE) or C(tiktoken.model). C(tokenizer_config.json) alone is not a
    tokenizer. Turn this off with O(require_tokenizer=false) for weights-only checkpoints.
  - An archive (C(.tar), C(.tar.gz), C(.tgz), C(.zip), ..., or a file whose first bytes are a tar, gzip or zip
    header) sitting where the files should be is refused with "extract it first".
  - With O(manifest), every file's size and sha256 must match the checkpoint manifest, and files missing from the
    directory or not in the manifest are reported.
  - Files and directories whose names start with C(.) are not part of the checkpoint and are ignored; a manifest that
    names one is refused (the bundle build leaves them out too).
  - A symbolic link that leaves the directory, dangles, or names a directory is refused, naming every such link, before
    anything is read (the bundle build, M(llmops.onprem.checkpoint_copy), applies the same rule).
  - Changes nothing in the checkpoint. With O(write_manifest) it hashes every file and writes the checkpoint manifest
    (reported as a change when the file's content changes; not written in check mode).
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: none
  check_mode:
    details: In check mode O(write_manifest) is not written; every check still runs.
options:
  path:
    description:
      - The checkpoint directory.
    type: path
    required: true
  manifest:
    description:
      - A checkpoint manifest (JSON, schema C(llmops.onprem/checkpoint-manifest/v1)) to check every file against.
      - The bundle carries one per model.
    type: path
  layout:
    description:
      - Run the Hugging Face layout checks. Turn off for checkpoints in another format; the manifest check still runs.
    type: bool
    default: true
  require_tokenizer:
    description:
      - Require tokenizer files (see the description for the accepted sets).
    type: bool
    default: true
  hash_contents:
    description:
      - With O(manifest), hash every file and compare with the manifest's sha256. With V(false) only the file list and
        sizes are compared (for a bundle whose import already verified every sha256).
    type: bool
    default: true
  write_manifest:
    description:
      - Hash every file and write the checkpoint manifest (canonical JSON) to this path; RV(manifest_digest) is its
        digest. Mutually exclusive with O(manifest).
    type: path
  name:
    description:
      - Model name written into the manifest with O(write_manifest). Defaults to the basename of O(path).
    type: str
  workers:
    description:
      - Files hashed in parallel.
    type: int
    default: 4
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Check the checkpoint and its files against the bundle's manifest
  llmops.onprem.checkpoint_verify:
    path: /media/usb/bundle/models/qwen2.5-0.5b-instruct
    manifest: /media/usb/bundle/models/qwen2.5-0.5b-instruct.manifest.json
  delegate_to: localhost

- name: Layout only (no manifest, nothing is hashed)
  llmops.onprem.checkpoint_verify:
    path: /srv/checkpoints/my-model
"""

RETURN = r"""
files:
  description: Number of files in the checkpoint.
  returned: success
  type: int
  sample: 11
bytes:
  description: Total size of those files.
  returned: success
  type: int
  sample: 988097824
hashed:
  description: Files whose sha256 was computed (and matched O(manifest), when given).
  returned: success
  type: int
  sample: 11
manifest_digest:
  description: Digest (sha256 of the canonical bytes) of the manifest the files were checked against, or of the one
    written with O(write_manifest); empty otherwise.
  returned: success
  type: str
  sample: 3b1d5f0e4c9f7e8d2a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f
problems:
  description: Every problem found (the module fails when this is not empty).
  returned: always
  type: list
  elements: str
  sample: ["model.safetensors.index.json names shard(s) that do not exist: model-00003-of-00003.safetensors"]
"""

from ansible.module_utils.basic import AnsibleModule

import os

from ansible_collections.llmops.onprem.plugins.module_utils._checkpoint import (
    CheckpointError, canonical_bytes, check_layout, compare_with_manifest, list_files, load_manifest, manifest_digest,
    manifest_from_dir)
from ansible_collections.llmops.onprem.plugins.module_utils._files import write_atomic


def argument_spec():
    return dict(
        path=dict(type="path", required=True),
        manifest=dict(type="path"),
        layout=dict(type="bool", default=True),
        require_tokenizer=dict(type="bool", default=True),
        hash_contents=dict(type="bool", default=True),
        write_manifest=dict(type="path"),
        name=dict(type="str"),
        workers=dict(type="int", default=4),
    )


def run(p, check_mode):
    files = list_files(p["path"])
    manifest = load_manifest(p["manifest"]) if p["manifest"] else None
    problems = check_layout(p["path"], p["require_tokenizer"]) if p["layout"] else []
    hashed = 0
    workers = max(1, p["workers"])
    if manifest is not None:
        found, hashed = compare_with_manifest(p["path"], manifest, workers=workers, hash_contents=p["hash_contents"])
        problems.extend(found)
    if problems:
        raise CheckpointError("checkpoint %s is not usable: %s" % (p["path"], " | ".join(problems)), problems)
    changed = False
    if p["write_manifest"]:
        manifest = manifest_from_dir(p["path"], p["name"] or os.path.basename(os.path.normpath(p["path"])), workers)
        hashed = len(manifest["files"])
        data = canonical_bytes(manifest)
        try:
            with open(p["write_manifest"], "rb") as fh:
                changed = fh.read() != data
        except OSError:
            changed = True
        if changed and not check_mode:
            write_atomic(p["write_manifest"], data)
    return dict(changed=changed, files=len(files), bytes=sum(files.values()), hashed=hashed, problems=[],
                manifest_digest=manifest_digest(manifest) if manifest is not None else "")


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           mutually_exclusive=[("manifest", "write_manifest")])
    try:
        result = run(module.params, module.check_mode)
    except CheckpointError as e:
        module.fail_json(msg=str(e), **e.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
