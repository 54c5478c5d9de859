#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bundle_delta
short_description: Build a delta bundle - a sealed bundle's signed manifest plus only what the site's receipt lacks
version_added: 0.1.0
description:
  - Reads a sealed bundle directory (M(llmops.onprem.bundle_seal)) and a site's receipt
    (M(llmops.onprem.bundle_receipt), schema C(llmops.onprem.receipt/v1)) and writes a delta directory at O(dest).
  - The delta holds the bundle's C(manifest.json) and C(manifest.json.sig) unchanged (the delta's id is the full
    bundle's id), C(delta.json) signed with the same key into C(delta.json.sig) - the carried files, the base (the
    bundle ids the receipt declared, the receipt's sha256, the files and bytes taken from the site) - and only the
    carried files.
  - A file is carried when the receipt does not hold its content (its sha256 with its size); the controller bootstrap
    (files at the root, C(python/), C(collections/)) is always carried, so the site's verify-first step works on a
    delta as on a full bundle. Paths in the receipt are never used.
  - The bundle's manifest must verify with the public half of O(private_key) (the delta is signed by the same key).
  - The receipt is read bounded (64 MiB) and without following a link; an unusable one is refused naming the entry.
  - O(dest) must be empty, missing, or a delta directory made by this module; files of an earlier delta that are not
    carried now are removed. A second run with the same bundle and receipt changes nothing.
  - Pack the delta for media with M(llmops.onprem.bundle_pack) (O(src) the delta directory); the site imports it with
    M(llmops.onprem.bundle_verify), which takes the files it does not carry from its last import.
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: none
options:
  src:
    description: The sealed (full) bundle directory.
    type: path
    required: true
  dest:
    description: The delta directory to write (created when missing).
    type: path
    required: true
  receipt:
    description: The site's receipt (JSON, written at the site by C(playbooks/receipt.yml)).
    type: path
    required: true
  private_key:
    description: PEM file of the Ed25519 key the bundle was sealed with; signs C(delta.json).
    type: path
    required: true
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Delta of the new bundle against what site A holds
  llmops.onprem.bundle_delta:
    src: /srv/bundles/site-a
    dest: /srv/bundles/site-a-delta
    receipt: /srv/receipts/site-a.receipt.json
    private_key: "{{ inventory_dir }}/.private/bundle/signing-key.pem"
"""

RETURN = r"""
manifest_sha256:
  description: The bundle's id (sha256 of its manifest), the same for the delta and the full bundle.
  returned: success
  type: str
delta_sha256:
  description: sha256 of C(delta.json).
  returned: success
  type: str
base:
  description: What the delta takes from the site - the bundles the receipt declared (id, name, created), files, bytes.
  returned: success
  type: dict
carried:
  description: Files and bytes the delta carries.
  returned: success
  type: dict
held:
  description: Files and bytes the delta takes from the site.
  returned: success
  type: dict
full:
  description: Files and bytes of the full bundle.
  returned: success
  type: dict
ratio:
  description: Carried bytes over the full bundle's bytes.
  returned: success
  type: float
summary:
  description: One line for people.
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._bundle import BundleError
from ansible_collections.llmops.onprem.plugins.module_utils._delta import build_delta


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            dest=dict(type="path", required=True),
            receipt=dict(type="path", required=True),
            private_key=dict(type="path", required=True, no_log=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = build_delta(p["src"], p["dest"], p["private_key"], p["receipt"], check_mode=module.check_mode)
    except BundleError as e:
        module.fail_json(msg=str(e))
    except OSError as e:
        module.fail_json(msg="cannot write the delta: %s" % e)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
