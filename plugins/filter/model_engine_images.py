# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The images model-engine names, for the bundle spec (the same settings as the model_engine role)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils import _model_engine as me
from ansible_collections.llmops.onprem.plugins.module_utils._oci import OnpremError

DOCUMENTATION = r"""
name: model_engine_images
short_description: Every upstream image model-engine names, for the bundle spec
version_added: 0.2.0
description:
  - Returns the sorted upstream references of every image model-engine names for the image
    settings O(_input) (the model_engine role's C(model_engine_images)) - the gateway/builder/
    cacher/forwarder image, the inference frameworks' images (C(vllm_repository) with
    C(frameworks.vllm), ...), and the utility images - with the role's defaults filled in.
  - The bundle role adds them to the images it carries and fails the build when one is missing,
    so a bundle built for a site carries every image model-engine will ask for.
positional: registry
options:
  _input:
    description: The image settings (C(model_engine_images)); an empty dict takes every default.
    type: dict
    required: true
  registry:
    description: A site registry C(host[:port]); when set, the references as named there.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: The bundle's model-engine images
  ansible.builtin.set_fact:
    bundle_model_engine_refs: "{{ model_engine_images | llmops.onprem.model_engine_images }}"
"""

RETURN = r"""
_value:
  description: Upstream references, sorted.
  type: list
  elements: str
  sample: ["docker.io/curlimages/curl:7.72.0", "public.ecr.aws/b2z8n5q1/vllm:0.11.0"]
"""


def model_engine_images(images, registry=""):
    """The upstream references (sorted) model-engine needs for these image settings."""
    if images is not None and not isinstance(images, dict):
        raise AnsibleFilterError("model_engine_images: the image settings must be a dict, got %s" % type(images).__name__)
    try:
        wanted = me.wanted_images(images or {}, registry or "")
    except OnpremError as e:
        raise AnsibleFilterError(str(e))
    return sorted(i["site"] if registry else i["upstream"] for i in wanted)


class FilterModule(object):
    """llmops.onprem model-engine images filter."""

    def filters(self):
        return {"model_engine_images": model_engine_images}
