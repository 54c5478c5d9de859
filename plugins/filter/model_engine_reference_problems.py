# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Secrets, ConfigMaps and keys model-engine's pods read that the cluster does not hold."""

from __future__ import annotations

from ansible_collections.llmops.onprem.plugins.module_utils import _model_engine as me

DOCUMENTATION = r"""
name: model_engine_reference_problems
short_description: The Secrets, ConfigMaps and keys model-engine's pods read that the cluster does not hold
version_added: 0.3.0
description:
  - Compares O(_input) (C(references) of M(llmops.onprem.model_engine_render_check#filter)) with the cluster's
    Secrets and ConfigMaps (O(live)) and returns one problem per missing object or missing key, naming the object,
    the namespace, the key, the pod that reads it, and the fix. Only the key names of O(live) are read.
positional: live, created
options:
  _input:
    description: The references (C(kind), C(namespace), C(name), C(key), C(where)).
    type: list
    elements: dict
    required: true
  live:
    description: The cluster's Secrets and ConfigMaps of the namespaces concerned (C(k8s_info) resources).
    type: list
    elements: dict
    required: true
  created:
    description: The objects the role creates itself before the install, each C([kind, namespace, name]).
    type: list
    elements: list
    default: []
"""

EXAMPLES = r"""
- name: Refuse references the cluster cannot satisfy
  ansible.builtin.fail:
    msg: "{{ render.references | llmops.onprem.model_engine_reference_problems(secrets.resources, created) }}"
"""

RETURN = r"""
_value:
  description: One problem per missing Secret or ConfigMap, or missing key; empty when the cluster holds them all.
  type: list
  elements: str
"""


def model_engine_reference_problems(refs, live, created=None):
    """Problems: references the cluster cannot satisfy."""
    return me.reference_problems(refs or [], live or [], created or [])


class FilterModule(object):
    """llmops.onprem model-engine reference filter."""

    def filters(self):
        return {"model_engine_reference_problems": model_engine_reference_problems}
