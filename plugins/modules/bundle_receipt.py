#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bundle_receipt
short_description: Write the site's receipt - what its bundle import holds - for a delta bundle
version_added: 0.1.0
description:
  - Reads the controller's bundle import directory (what M(llmops.onprem.bundle_verify) imported) and writes a plain
    JSON receipt (schema C(llmops.onprem.receipt/v1), unsigned by design) that an engineer carries back to the
    connected side, where C(playbooks/bundle.yml) with C(bundle_receipt) builds a delta bundle from it.
  - The receipt names the bundle last imported (its id, the sha256 of its manifest, name, creation time and versions),
    every file content the import directory holds (sha256 and size), the images with their digests and the image blobs
    held, the OS package versions of the apt repository, the chart versions and the checkpoint manifests, and every
    file of the last import that is missing or changed, with the reason. See C(docs/lifecycle.md) for the format.
  - A file counts as held when it is a regular file of its signed size whose sha256 is the import's own record for it
    (size, mtime and inode unchanged since the import verified it), or, without such a record or with O(verify), the
    sha256 of its bytes (never read past the signed size). Links are never followed; a link or special file anywhere
    in O(src) is refused, as the import refuses it.
  - The receipt is advice, never trusted by the site - a receipt that claims too much gives a delta the site refuses,
    naming what it lacks.
  - A second run over the same import directory rewrites nothing (the C(written) time is kept).
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: none
options:
  src:
    description: The bundle import directory (C(bundle_import_dest), by default C(.bundle) next to the inventory).
    type: path
    required: true
  dest:
    description: The receipt file to write. It must lie outside O(src). Its folder must exist.
    type: path
    required: true
  verify:
    description: Hash every file of the import again instead of trusting the import's records for unchanged files.
    type: bool
    default: false
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Write the receipt to carry back
  llmops.onprem.bundle_receipt:
    src: "{{ inventory_dir }}/.bundle"
    dest: /media/usb/site-a.receipt.json
"""

RETURN = r"""
path:
  description: The receipt file.
  returned: success
  type: str
receipt_sha256:
  description: sha256 of the receipt's bytes (a delta built from it records it as its base's receipt).
  returned: success
  type: str
bundles:
  description: The bundle the import directory holds (id, name, created, versions).
  returned: success
  type: list
  elements: dict
totals:
  description: Files the last import listed, how many are held (and their bytes), how many are missing or changed.
  returned: success
  type: dict
  sample: {files: 412, held: 412, held_bytes: 16492674416, missing: 0}
missing:
  description: Up to 20 files of the last import that are missing or changed, each with the reason.
  returned: success
  type: list
  elements: dict
bytes_hashed:
  description: Bytes read to check files without an unchanged record (all of them with O(verify)).
  returned: success
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._bundle import BundleError
from ansible_collections.llmops.onprem.plugins.module_utils._delta import write_receipt


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            dest=dict(type="path", required=True),
            verify=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = write_receipt(p["src"], p["dest"], verify=p["verify"], check_mode=module.check_mode)
    except BundleError as e:
        module.fail_json(msg=str(e))
    except OSError as e:
        module.fail_json(msg="cannot write the receipt: %s" % e)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
