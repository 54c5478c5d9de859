#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: checkpoint_prune
short_description: Remove from the object store the checkpoint prefixes an earlier bundle synced and the current one no longer names
version_added: 0.1.0
description:
  - The upgrade's clean-up of the object store (docs/lifecycle.md, "Upgrade"). O(checkpoints) are the prefixes earlier
    runs of the checkpoints stage synced and the current bundle no longer names (C(llmops_site.checkpoints.superseded)).
    Every object under each such prefix is deleted, and any multipart upload left open under it is aborted.
  - Only prefixes this collection names are touched - C(<model>/<manifest digest>), the digest being the entry's
    C(digest). Anything else is kept and named in RV(kept), and so is a prefix O(keep) names (the current bundle's) and
    one whose digest a pod still references (O(in_use)) - the old pods of a roll may still be reading it.
  - Check mode lists what would go (with the object count and bytes) and deletes nothing; a second run finds nothing.
  - The module runs where the task runs and needs boto3 there (the checkpoints role runs it on the controller).
extends_documentation_fragment:
  - llmops.onprem.s3_endpoint
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: none
options:
  checkpoints:
    description: The prefixes to remove, as the checkpoints stage records them.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The checkpoint's name (for the messages).
        type: str
        required: true
      bucket:
        description: Its bucket.
        type: str
        required: true
      prefix:
        description: Its prefix, C(<model>/<manifest digest>).
        type: str
        required: true
      digest:
        description: Its checkpoint manifest digest (64 hex characters), the prefix's last part.
        type: str
        required: true
  keep:
    description: Prefixes to keep whatever O(checkpoints) says, C(<bucket>/<prefix>) (the current bundle's).
    type: list
    elements: str
    default: []
  in_use:
    description: Manifest digests a pod still references, each to the pod (C(<namespace>/<name>)) named in the message.
    type: dict
    default: {}
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Remove the checkpoints an earlier bundle synced and this one no longer names
  llmops.onprem.checkpoint_prune:
    endpoint_url: "{{ llmops_site.minio.s3_endpoint_url }}"
    access_key: "{{ lookup('ansible.builtin.file', rw.access_key_file) }}"
    secret_key: "{{ lookup('ansible.builtin.file', rw.secret_key_file) }}"
    ca_path: "{{ llmops_site.pki.ca_file }}"
    checkpoints: "{{ llmops_site.checkpoints.superseded }}"
    keep: "{{ llmops_site.checkpoints.synced | map(attribute='bucket') | zip(llmops_site.checkpoints.synced | map(attribute='prefix')) | map('join', '/') }}"
  delegate_to: localhost
"""

RETURN = r"""
removed:
  description: The prefixes emptied (in check mode, that would be), with the objects and bytes under each.
  returned: always
  type: list
  elements: dict
  sample: [{name: tiny, bucket: model-checkpoints, prefix: "tiny/3b1d5f0e...", objects: 6, bytes: 2147483648}]
kept:
  description: Entries of O(checkpoints) left in place, each with the reason; they stay superseded.
  returned: always
  type: list
  elements: dict
  sample: [{name: tiny, bucket: model-checkpoints, prefix: "tiny/3b1d5f0e...", why: "a pod references it: serving/llmops-serving-tiny-5d9c"}]
absent:
  description: Entries of O(checkpoints) with nothing left under their prefix (removed earlier).
  returned: always
  type: list
  elements: dict
"""

import re

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.llmops.onprem.plugins.module_utils._checkpoint_s3 import BOTO3_IMPORT_ERROR, HAS_BOTO3, Store
from ansible_collections.llmops.onprem.plugins.module_utils._s3_endpoint import (
    OnpremError, bucket_name_problems, endpoint_argument_spec)

DIGEST = re.compile(r"^[0-9a-f]{64}$")
OWN_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/([0-9a-f]{64})$")


def argument_spec():
    spec = endpoint_argument_spec()
    spec.update(
        checkpoints=dict(type="list", elements="dict", required=True, options=dict(
            name=dict(type="str", required=True),
            bucket=dict(type="str", required=True),
            prefix=dict(type="str", required=True),
            digest=dict(type="str", required=True),
        )),
        keep=dict(type="list", elements="str", default=[]),
        in_use=dict(type="dict", default={}),
    )
    return spec


def why_kept(entry, keep, in_use):
    """Pure: why an entry must stay (a sentence), or None when it may go."""
    m = OWN_PREFIX.match(entry["prefix"])
    if not m or m.group(1) != entry["digest"] or bucket_name_problems(entry["bucket"]):
        return ("not a prefix this collection names (<model>/<manifest digest> in a valid bucket, the digest %s); "
                "remove it by hand if it is yours to remove" % entry["digest"])
    if "%s/%s" % (entry["bucket"], entry["prefix"]) in keep:
        return "the current bundle names it"
    if entry["digest"] in in_use:
        return "a pod references it: %s" % in_use[entry["digest"]]
    return None


def plan(entries, keep, in_use):
    """Pure: (to remove, kept) - each entry once (by bucket and prefix), in the given order."""
    go, kept, seen = [], [], set()
    for e in entries:
        key = (e["bucket"], e["prefix"])
        if key in seen:
            continue
        seen.add(key)
        why = why_kept(e, set(keep), in_use)
        (kept.append(dict(e, why=why)) if why else go.append(e))
    return go, kept


def run(p, check_mode, store_factory=Store):
    for d in p["in_use"]:
        if not DIGEST.match(d):
            raise OnpremError("in_use: %r is not a manifest digest (64 hex characters)" % (d,), kind="input")
    go, kept = plan(p["checkpoints"], p["keep"], p["in_use"])
    removed, absent = [], []
    for e in go:
        store = store_factory(p["endpoint_url"], p["access_key"], p["secret_key"], p["region"], p.get("ca_path"),
                              p["timeout"], e["bucket"], e["prefix"])
        objects = store.list()
        uploads = store.open_uploads()
        if not objects and not uploads:
            absent.append(e)
            continue
        if not check_mode:
            if uploads:
                store.abort_uploads(uploads)
            store.delete(sorted(objects))
        removed.append(dict(e, objects=len(objects), bytes=sum(objects.values()), open_uploads=len(uploads)))
    return dict(changed=bool(removed), removed=removed, kept=kept, absent=absent)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=str(BOTO3_IMPORT_ERROR))
    try:
        result = run(module.params, module.check_mode)
    except OnpremError as e:
        module.fail_json(msg=str(e), **e.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
