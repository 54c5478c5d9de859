# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The model-engine images the bundle does not carry."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils import _model_engine as me

DOCUMENTATION = r"""
name: model_engine_missing_images
short_description: The model-engine images the bundle does not carry
version_added: 0.2.0
description:
  - Returns the entries of O(_input) (C(images) of M(llmops.onprem.model_engine_values#filter)) whose
    C(upstream) reference is not among O(bundle) (the bundle's image references, compared normalised).
positional: bundle
options:
  _input:
    description: The wanted images (C(name), C(upstream), C(site)).
    type: list
    elements: dict
    required: true
  bundle:
    description: The image references the bundle carries (its manifest's C(images[].ref)).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: The images the bundle lacks
  ansible.builtin.set_fact:
    missing: "{{ computed.images | llmops.onprem.model_engine_missing_images(bundle_import_result.images | map(attribute='ref')) }}"
"""

RETURN = r"""
_value:
  description: The missing entries (C(name), C(upstream), C(site)).
  type: list
  elements: dict
"""


def model_engine_missing_images(wanted, bundle):
    """The wanted images the bundle does not carry."""
    if not isinstance(wanted, list):
        raise AnsibleFilterError("model_engine_missing_images: expected a list of images, got %s" % type(wanted).__name__)
    return me.missing_images(wanted, list(bundle or []))


class FilterModule(object):
    """llmops.onprem model-engine missing images filter."""

    def filters(self):
        return {"model_engine_missing_images": model_engine_missing_images}
