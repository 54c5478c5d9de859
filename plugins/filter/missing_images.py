# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The images a stage needs that a list (the bundle's) does not have."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
from ansible_collections.llmops.onprem.plugins.plugin_utils._gpu_operator import missing_images as _missing
from ansible_collections.llmops.onprem.plugins.module_utils._oci import REF_ANNOTATION

DOCUMENTATION = r"""
name: missing_images
short_description: The image references of a list that another list (the bundle's images) lacks
version_added: 1.0.0
description:
  - Returns, in order, every reference of the input that O(available) does not hold. References are compared
    normalised (C(nginx:1.25) is C(docker.io/library/nginx:1.25)) by name and tag, so a bundle entry pinned to a digest
    (C(name:tag@sha256:...)) still matches C(name:tag).
  - Entries may be strings or C({ref}) dicts (C(bundle_spec.images) entries), in both lists. O(available) may also be
    an OCI image layout's C(index.json) content (the bundle's C(images/index.json)) - its images are named by the
    annotation C(org.opencontainers.image.ref.name).
positional: available
options:
  _input:
    description: The references needed.
    type: list
    elements: raw
    required: true
  available:
    description: The references at hand - a list, or the bundle's C(images/index.json) as a dict.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Stop when the bundle lacks an image
  ansible.builtin.fail:
    msg: "the bundle must carry {{ missing | join(', ') }}"
  vars:
    missing: "{{ needed | llmops.onprem.missing_images(bundle_refs) }}"
  when: missing | length > 0
"""

RETURN = r"""
_value:
  description: The missing references, as given in the input.
  type: list
  elements: str
"""


def _refs(items, what):
    out = []
    for i in items or []:
        ref = i.get("ref") if isinstance(i, dict) else i
        if not isinstance(ref, str):
            raise AnsibleFilterError("missing_images: %s entries must be references or {ref} dicts, got %r" % (what, i))
        out.append(ref)
    return out


def missing_images(needed, available):
    if isinstance(available, dict):
        available = [(m.get("annotations") or {}).get(REF_ANNOTATION) for m in available.get("manifests") or []]
        available = [r for r in available if r]
    try:
        return _missing(_refs(needed, "input"), _refs(available, "available"))
    except OnpremError as e:
        raise AnsibleFilterError("missing_images: %s" % e)


class FilterModule(object):
    """llmops.onprem image list filters."""

    def filters(self):
        return {"missing_images": missing_images}
