#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bundle_inspect
short_description: List what an air-gap bundle holds, and write its CycloneDX SBOM, without installing it
version_added: 0.1.0
description:
  - Reads a bundle directory, or media holding C(bundle-NNNN.tar) segments (what M(llmops.onprem.bundle_verify)
    accepts), without writing or deleting anything there.
  - The signature comes first, with the same checks as M(llmops.onprem.bundle_verify) before it copies anything
    C(manifest.json) against C(manifest.json.sig) with the site's public key, C(segments.json) against its signature
    and the manifest, every path, no unlisted or missing file, every size as signed. A bundle that fails any of them
    is refused and nothing is listed or written.
  - Then it reads only the small metadata files the signed manifest lists - C(images/index.json), each image's
    manifest and config, the apt C(Packages) index, C(Chart.yaml) (in a chart folder or a packaged C(.tgz)), each
    wheel's C(METADATA) and, with O(package_licenses), each C(.deb)'s C(/usr/share/doc/<package>/copyright). Each is
    bounded by its signed size and by a limit (16 MiB for a metadata file, 64 MiB for a packaged chart or a wheel,
    1 MiB for a member of an archive, 64 MiB of a C(.deb)'s decompressed C(data.tar)). A larger metadata file or
    packaged chart refuses the bundle; a larger wheel, C(METADATA) or copyright file is listed without its licence, with
    the reason. Files are opened without following links, and what is read is used only once the file's bytes match
    the signed sha256.
  - Fast by design - image layers and checkpoint files are not hashed (their sizes are checked against the signed
    manifest). C(verified.hashed) says how many files and bytes were hashed. For a check of every byte use
    M(llmops.onprem.bundle_verify), which the import runs anyway.
  - Every file of the manifest is accounted for in exactly one category (C(categories)); a file that no image,
    chart, package, wheel, collection, binary or model claims is listed in C(problems).
  - Builds a CycloneDX 1.6 JSON SBOM (images as C(pkg:oci) with their digests, Debian packages as C(pkg:deb), wheels
    as C(pkg:pypi), charts, collections, binaries, and models as C(machine-learning-model) components with their
    files as C(data) components, each with its sha256) and validates it with the CycloneDX library's own schema
    validator; an SBOM that does not validate is an error and nothing is written.
  - Licences are the ones the packages declare - for wheels C(License-Expression), else the License classifiers,
    else a one-line C(License) field from C(METADATA); for Debian packages the C(License) fields of a machine-readable
    (DEP-5) copyright file. Each component says where its licence came from (C(llmops:license-source)), or why none.
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Verifies and lists as a real run does; writes nothing and reports whether O(dest) would change.
  diff_mode:
    support: none
options:
  src:
    description: The bundle directory or the mounted media with segments.
    type: path
    required: true
  public_key:
    description: PEM file of the Ed25519 public key the site trusts. It must not come from the bundle itself.
    type: path
    required: true
  dest:
    description:
      - A directory to write C(sbom.cdx.json) (CycloneDX 1.6 JSON) and C(inventory.json) (this module's result
        without C(listing)) into; created when missing. Files are replaced atomically, never written through a
        link, and only when their content changes. Without it nothing is written.
    type: path
  package_licenses:
    description:
      - Read each C(.deb)'s copyright file for its licences. This reads (and hashes) every C(.deb) of the bundle and
        decompresses at most 64 MiB of each; turn it off for the fastest listing (packages then carry no licence).
    type: bool
    default: true
  sbom:
    description:
      - Build and validate the CycloneDX SBOM (and write it with O(dest)). Off, nothing needs the CycloneDX library and
        RV(sbom) is null - what the preflight stage uses, which wants only the totals per destination.
    type: bool
    default: true
    version_added: 1.0.0
requirements:
  - cyclonedx-python-lib with its JSON validation (in C(bundle/requirements-controller.lock))
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Inspect the stick before importing it, and keep its SBOM
  llmops.onprem.bundle_inspect:
    src: /media/usb
    public_key: /etc/llmops/bundle-signing.pub.pem
    dest: /var/lib/llmops/bundle-inspect
  register: inspect

- name: Show it
  ansible.builtin.debug:
    msg: "{{ inspect.listing }}"
"""

RETURN = r"""
bundle:
  description: The bundle's id (sha256 of the signed C(manifest.json)), name, creation time, versions, source and segments.
  returned: success
  type: dict
  sample: {id: "9f2c...", name: site-a-2026-11, created: "2026-12-01T10:00:00Z", versions: {vllm: "0.34.0"},
           source: /media/usb, segmented: true, segments: 7}
verified:
  description:
    - What was checked. C(signature) and C(listing) are always true on success; C(data_hashed) is false (layers and
      checkpoints are not hashed); C(hashed) counts the metadata files (and C(.deb) files) hashed; C(note) says so in words.
  returned: success
  type: dict
images:
  description: One entry per image of C(images/index.json) - C(ref), C(name), C(tag), C(digest), C(size) (manifest, config
    and layers), C(blobs), C(platforms).
  returned: success
  type: list
  elements: dict
charts:
  description: Charts - C(name) (in the bundle), C(chart), C(version), C(app_version), C(path), C(files), C(size), C(sha256).
  returned: success
  type: list
  elements: dict
packages:
  description: OS packages - C(name), C(version), C(arch), C(distro), C(path), C(size), C(sha256), C(licenses), C(license_source).
  returned: success
  type: list
  elements: dict
wheels:
  description: Python wheels - C(name), C(version), C(path), C(size), C(sha256), C(license_kind), C(licenses), C(license_source).
  returned: success
  type: list
  elements: dict
collections:
  description: Ansible collection artifacts - C(name), C(version), C(path), C(size), C(sha256).
  returned: success
  type: list
  elements: dict
binaries:
  description: Binaries - C(name), C(path), C(size), C(sha256).
  returned: success
  type: list
  elements: dict
models:
  description: Model checkpoints - C(name), C(files), C(size), C(manifest_digest) (the checkpoint manifest the object store
    prefix is named by), C(file_list) (path, size, sha256).
  returned: success
  type: list
  elements: dict
categories:
  description:
    - Every file of the signed manifest, in exactly one category (C(images), C(charts), C(packages), C(python),
      C(collections), C(binaries), C(models), C(tooling)) - C(files), C(bytes), C(paths), and C(unclaimed) (files of the
      category that no listed item claims).
  returned: success
  type: dict
destinations:
  description:
    - Files and bytes per destination at the site - C(controller) (the import directory holds the whole bundle),
      C(package_repo), C(registry), C(object_store).
  returned: success
  type: dict
  sample: {controller: {files: 812, bytes: 21474836480, human: "20.0 GiB"}, registry: {files: 120, bytes: 9663676416, human: "9.0 GiB"}}
totals:
  description: Files and bytes of the bundle.
  returned: success
  type: dict
problems:
  description: Inconsistencies found while listing (an unclaimed file, a blob an image names that the bundle lacks, a package
    missing from the apt index). They do not fail the module.
  returned: success
  type: list
  elements: str
sbom:
  description: The SBOM - C(format) (CycloneDX), C(spec_version), C(components) (top-level), C(valid) (always true on success),
    C(path) (with O(dest)); null with O(sbom=false).
  returned: success
  type: dict
written:
  description: Files of O(dest) written (in check mode, that would be written).
  returned: success
  type: list
  elements: str
listing:
  description: The listing as lines of text - a table per category and the totals per destination.
  returned: success
  type: list
  elements: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._bundle import BundleError
from ansible_collections.llmops.onprem.plugins.module_utils._files import write_atomic
from ansible_collections.llmops.onprem.plugins.module_utils._bundle_inspect import inspect, listing, sbom_document

SBOM_FILE = "sbom.cdx.json"
INVENTORY_FILE = "inventory.json"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _current(path, limit):
    """The bytes at path (a regular file, not followed through a link, at most limit+1), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(limit + 1)


def run(p, check_mode):
    inv = inspect(p["src"], p["public_key"], package_licenses=p["package_licenses"])
    outputs = {INVENTORY_FILE: (json.dumps(inv, sort_keys=True, indent=1) + "\n").encode("utf-8")}
    sbom = None
    if p.get("sbom", True):
        sbom = sbom_document(inv)  # validated; raises before anything is written
        outputs[SBOM_FILE] = sbom.encode("utf-8")
    written = []
    if p["dest"]:
        for name, data in sorted(outputs.items()):
            path = os.path.join(p["dest"], name)
            if _current(path, len(data)) != data:
                written.append(path)
        if written and not check_mode:
            os.makedirs(p["dest"], mode=0o755, exist_ok=True)
            for path in written:
                write_atomic(path, outputs[os.path.basename(path)])
    summary = None
    if sbom is not None:
        doc = json.loads(sbom)
        summary = {"format": doc["bomFormat"], "spec_version": doc["specVersion"], "components": len(doc.get("components", [])),
                   "valid": True, "path": os.path.join(p["dest"], SBOM_FILE) if p["dest"] else None}
    result = dict(inv, changed=bool(written), written=written, listing=listing(inv), sbom=summary)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            public_key=dict(type="path", required=True),
            dest=dict(type="path"),
            package_licenses=dict(type="bool", default=True),
            sbom=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module.params, module.check_mode)
    except BundleError as e:
        module.fail_json(msg=str(e))
    except OSError as e:
        module.fail_json(msg="bundle inspect failed: %s" % e)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
