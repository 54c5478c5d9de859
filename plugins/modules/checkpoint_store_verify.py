#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: checkpoint_store_verify
short_description: Check the objects of a checkpoint prefix in the object store against its manifest, byte for byte
version_added: 1.0.0
description:
  - Reads, and changes nothing (check mode runs the same reads). The site verification report
    (P(llmops.onprem.verify#role)) runs it for every prefix the checkpoints stage synced.
  - Reads the manifest that M(llmops.onprem.checkpoint_sync) wrote last under the prefix (C(<prefix>/.llmops/manifest.json)),
    checks it against O(manifest) (the bundle's, byte for byte) and O(digest) when given, lists the prefix, and reads
    every object of the manifest back, comparing the sha256 of the bytes the store returns with the manifest - not the
    sha256 in the object's metadata, which an object replaced behind the collection's back still carries.
  - Reports the files missing from the store, those whose size differs, those whose bytes differ (RV(corrupt)), and
    objects under the prefix the manifest does not name (RV(extra), not a problem - the downloader ignores them).
  - With O(fail_on_problems=false) the module succeeds and RV(problems) says what is wrong; it fails only when the
    store cannot be read.
extends_documentation_fragment:
  - llmops.onprem.s3_endpoint
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: none
options:
  bucket:
    description: Bucket that holds the checkpoint.
    type: str
    required: true
  prefix:
    description: Key prefix of the checkpoint (C(<model>/<manifest digest>) as the checkpoints stage syncs it).
    type: str
    required: true
  manifest:
    description: The checkpoint manifest the prefix must hold (the bundle's); without it the store's own manifest is used.
    type: path
  digest:
    description: The manifest digest the prefix must hold (the checkpoints stage's record).
    type: str
  parallel:
    description: Objects read back at once.
    type: int
    default: 8
  fail_on_problems:
    description: Fail when RV(problems) is not empty.
    type: bool
    default: true
requirements:
  - boto3 on the host that runs the module.
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Check every object of a synced checkpoint against its manifest
  llmops.onprem.checkpoint_store_verify:
    endpoint_url: https://minio.site.internal:9000
    ca_path: /srv/site/.private/pki/ca.crt
    access_key: "{{ lookup('ansible.builtin.file', '/srv/site/.private/minio/readonly/access-key') }}"
    secret_key: "{{ lookup('ansible.builtin.file', '/srv/site/.private/minio/readonly/secret-key') }}"
    bucket: model-checkpoints
    prefix: qwen2.5-0.5b-instruct/3b1d5f0e4c9f7e8d2a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f
    digest: 3b1d5f0e4c9f7e8d2a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f
    fail_on_problems: false
  delegate_to: localhost
  register: store_check
"""

RETURN = r"""
ok:
  description: True when every file of the manifest is in the store with its size and sha256.
  returned: success
  type: bool
files:
  description: Files the manifest names.
  returned: success
  type: int
  sample: 5
bytes:
  description: Their total size.
  returned: success
  type: int
  sample: 988097824
checked:
  description: Objects read back and hashed.
  returned: success
  type: int
  sample: 5
manifest_digest:
  description: Digest of the manifest the objects were checked against.
  returned: success
  type: str
missing:
  description: Files of the manifest with no object.
  returned: success
  type: list
  elements: str
resized:
  description: Files whose object has another size than the manifest's.
  returned: success
  type: list
  elements: str
corrupt:
  description: Files whose object's bytes hash to another sha256 than the manifest's.
  returned: success
  type: list
  elements: str
  sample: [config.json]
extra:
  description: Objects under the prefix that the manifest does not name (outside C(.llmops/)).
  returned: success
  type: list
  elements: str
problems:
  description: Every problem found, one sentence each.
  returned: always
  type: list
  elements: str
  sample: ["1 of 5 object(s) hold other bytes than the manifest says: config.json"]
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.llmops.onprem.plugins.module_utils._checkpoint import (
    MANIFEST_KEY, CheckpointError, canonical_bytes, load_manifest, manifest_digest, parse_manifest_bytes)
from ansible_collections.llmops.onprem.plugins.module_utils._checkpoint_s3 import BOTO3_IMPORT_ERROR, HAS_BOTO3, Store
from ansible_collections.llmops.onprem.plugins.module_utils._s3_endpoint import OnpremError, endpoint_argument_spec


def argument_spec():
    spec = endpoint_argument_spec()
    spec.update(
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", required=True),
        manifest=dict(type="path"),
        digest=dict(type="str"),
        parallel=dict(type="int", default=8),
        fail_on_problems=dict(type="bool", default=True),
    )
    return spec


def _some(names, limit=10):
    return ", ".join(names[:limit]) + (" and %d more" % (len(names) - limit) if len(names) > limit else "")


def compare(manifest, sizes, read_back):
    """Pure: (missing, resized, to_hash, extra) from the manifest and the listing {rel: size}; read_back(files) -> the
    paths whose bytes differ."""
    wanted = dict((f["path"], f) for f in manifest["files"])
    missing = sorted(p for p in wanted if p not in sizes)
    resized = sorted(p for p in wanted if p in sizes and sizes[p] != wanted[p]["size"])
    to_hash = [wanted[p] for p in sorted(wanted) if p in sizes and sizes[p] == wanted[p]["size"]]
    extra = sorted(r for r in sizes if r not in wanted and not r.startswith(".llmops/"))
    corrupt = sorted(read_back(to_hash)) if to_hash else []
    return missing, resized, to_hash, corrupt, extra


def run(p, store_factory=Store):
    prefix = p["prefix"].strip("/")
    if not prefix or "//" in prefix:
        raise OnpremError("prefix %r must name a key prefix such as model/digest (not empty, no '//')" % p["prefix"], kind="input")
    store = store_factory(p["endpoint_url"], p["access_key"], p["secret_key"], p["region"], p.get("ca_path"), p["timeout"],
                          p["bucket"], prefix, parallel=max(1, p["parallel"]))
    where = "s3://%s/%s" % (p["bucket"], prefix)
    problems = []
    sizes = store.list()
    stored = store.get_bytes(MANIFEST_KEY)
    local = load_manifest(p["manifest"]) if p.get("manifest") else None
    manifest = local
    if stored is None:
        problems.append("%s has no manifest (%s): the checkpoints stage writes it last, so the sync never finished"
                        % (where, MANIFEST_KEY))
    else:
        try:
            remote = parse_manifest_bytes(stored, "%s/%s" % (where, MANIFEST_KEY))
        except CheckpointError as e:
            problems.append(str(e))
            remote = None
        if local is not None and stored != canonical_bytes(local):
            problems.append("the manifest in %s is not the bundle's (%s)" % (where, p["manifest"]))
        manifest = local if local is not None else remote
    if manifest is None:
        return dict(ok=False, files=0, bytes=0, checked=0, manifest_digest="", missing=[], resized=[], corrupt=[],
                    extra=sorted(r for r in sizes if not r.startswith(".llmops/")), problems=problems)
    digest = manifest_digest(manifest)
    if p.get("digest") and p["digest"] != digest:
        problems.append("the manifest of %s has digest %s, the checkpoints stage recorded %s" % (where, digest, p["digest"]))
    missing, resized, to_hash, corrupt, extra = compare(manifest, sizes, store.read_back)
    n = len(manifest["files"])
    if missing:
        problems.append("%d of %d file(s) are missing from %s: %s" % (len(missing), n, where, _some(missing)))
    if resized:
        problems.append("%d of %d object(s) in %s have another size than the manifest says: %s"
                        % (len(resized), n, where, _some(resized)))
    if corrupt:
        problems.append("%d of %d object(s) in %s hold other bytes than the manifest says (sha256 of the bytes read back): %s"
                        % (len(corrupt), n, where, _some(corrupt)))
    return dict(ok=not problems, files=n, bytes=sum(f["size"] for f in manifest["files"]), checked=len(to_hash),
                manifest_digest=digest, missing=missing, resized=resized, corrupt=corrupt, extra=extra, problems=problems)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=str(BOTO3_IMPORT_ERROR))
    try:
        result = run(module.params)
    except (OnpremError, CheckpointError) as e:
        module.fail_json(msg=str(e), problems=[str(e)])
    if result["problems"] and module.params["fail_on_problems"]:
        module.fail_json(msg="; ".join(result["problems"]), **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
