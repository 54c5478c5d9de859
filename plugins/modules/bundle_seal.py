#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bundle_seal
short_description: Write and sign the manifest of an air-gap bundle directory
version_added: 0.1.0
description:
  - Hashes every file of a bundle directory (sha256) into C(manifest.json), grouped by kind (the top-level
    folder C(images), C(charts), C(packages), C(binaries), C(python), C(collections), C(models); C(root) for
    files at the top such as C(bootstrap.sh)), together with the spec and versions the bundle was built from
    and the images pinned to digests.
  - Signs the exact bytes of C(manifest.json) with an Ed25519 private key into C(manifest.json.sig)
    (base64 of the raw 64-byte signature). The site verifies it with the public key, which travels separately
    from the bundle, using M(llmops.onprem.bundle_verify).
  - A rebuild with the same content rewrites nothing and reports C(changed=false).
  - Symbolic links are refused; a bundle holds regular files only.
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: full
options:
  path:
    description: The bundle directory.
    type: path
    required: true
  private_key:
    description:
      - PEM file of the Ed25519 signing key (for example made by M(community.crypto.openssl_privatekey) with
        C(type=Ed25519)). Keep it on the connected side; never put it in the bundle.
    type: path
    required: true
  spec:
    description: The bundle spec the bundle was built from, recorded in the manifest.
    type: dict
    default: {}
  versions:
    description: The versions matrix, recorded in the manifest.
    type: dict
    default: {}
  images:
    description: Images in C(images/) with the digest each was pinned to (C(ref), C(digest)).
    type: list
    elements: dict
    default: []
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Seal the bundle
  llmops.onprem.bundle_seal:
    path: /srv/bundles/site-a
    private_key: "{{ inventory_dir }}/.private/bundle/signing-key.pem"
    spec: "{{ bundle_spec }}"
    versions: "{{ bundle_spec.versions }}"
    images: "{{ bundle_images.images }}"
"""

RETURN = r"""
manifest_sha256:
  description: sha256 of C(manifest.json); the import records it.
  returned: always
  type: str
files:
  description: Number of files listed.
  returned: always
  type: int
bytes:
  description: Total size of the listed files.
  returned: always
  type: int
kinds:
  description: Files and bytes per kind.
  returned: always
  type: dict
  sample: {images: {files: 12, bytes: 734003200}}
"""

import hashlib
import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._bundle import (
    MANIFEST, SIGNATURE, BundleError, build_manifest, canonical, read_json, sign)
from ansible_collections.llmops.onprem.plugins.module_utils._files import write_atomic


def run(p, check_mode):
    root = p["path"]
    if not os.path.isdir(root):
        raise BundleError("the bundle directory %s does not exist" % root)
    mpath, spath = os.path.join(root, MANIFEST), os.path.join(root, SIGNATURE)
    old_bytes, previous = b"", None
    if os.path.exists(mpath):
        try:
            old_bytes, previous = read_json(mpath, MANIFEST)
        except BundleError:
            previous = None
    manifest = build_manifest(root, spec=p["spec"], versions=p["versions"], images=p["images"], previous=previous)
    data = canonical(manifest)
    signature = sign(data, p["private_key"])
    try:
        with open(spath, "rb") as f:
            old_sig = f.read()
    except OSError:
        old_sig = b""
    changed = data != old_bytes or signature != old_sig
    if changed and not check_mode:
        write_atomic(mpath, data)
        write_atomic(spath, signature)
    kinds = dict((k, dict(files=len(v), bytes=sum(e["size"] for e in v))) for k, v in manifest["files"].items())
    before = dict((e["path"], e["sha256"]) for v in (previous or {}).get("files", {}).values() for e in v)
    after = dict((e["path"], e["sha256"]) for v in manifest["files"].values() for e in v)
    return dict(changed=changed, manifest_sha256=hashlib.sha256(data).hexdigest(), files=manifest["totals"]["files"],
                bytes=manifest["totals"]["bytes"], kinds=kinds,
                diff=dict(before=json.dumps(before, indent=1, sort_keys=True) + "\n",
                          after=json.dumps(after, indent=1, sort_keys=True) + "\n",
                          before_header=mpath, after_header=mpath))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            private_key=dict(type="path", required=True, no_log=False),
            spec=dict(type="dict", default={}),
            versions=dict(type="dict", default={}),
            images=dict(type="list", elements="dict", default=[]),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module.params, module.check_mode)
    except BundleError as e:
        module.fail_json(msg=str(e))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
