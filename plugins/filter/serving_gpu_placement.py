# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What stops the serving models from being placed on the site's GPU nodes."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
from ansible_collections.llmops.onprem.plugins.module_utils._gpu import facts_from_nodes, placement_problems

DOCUMENTATION = r"""
name: serving_gpu_placement
short_description: What stops the serving models from being placed on the site's GPU nodes
version_added: 1.0.0
description:
  - For each model entry of O(_input) that asks for GPUs (C(gpus) > 0, C(device) not C(cpu)), one problem when its
    C(gpu_product) is the C(nvidia.com/gpu.product) of no node, or when no node (with that product) has C(gpus) GPUs.
  - O(nodes) are the cluster's Node objects (C(kubernetes.core.k8s_info) resources, read for the labels GPU feature
    discovery sets) or GPU facts (C(llmops_site.gpu.nodes), M(llmops.onprem.gpu_node_facts#filter)); a node's own
    labels win over a recorded fact of the same node.
positional: nodes
options:
  _input:
    description: The serving model entries (C(vllm_serving_models)).
    type: list
    elements: dict
    required: true
  nodes:
    description: Node objects or GPU facts.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Refuse a model the GPU nodes cannot take
  ansible.builtin.fail:
    msg: "{{ problems | join('; ') }}"
  vars:
    problems: "{{ vllm_serving_models | llmops.onprem.serving_gpu_placement(nodes.resources) }}"
  when: problems | length > 0
"""

RETURN = r"""
_value:
  description: One problem per model that no GPU node can take; empty when all can be placed.
  type: list
  elements: str
"""


def serving_gpu_placement(models, nodes):
    try:
        objects = [n for n in nodes or [] if isinstance(n, dict) and "metadata" in n]
        live = facts_from_nodes(objects)
        named = set(f["node"] for f in live)
        facts = [n for n in nodes or [] if isinstance(n, dict) and "product" in n and "node" in n and n["node"] not in named]
        return placement_problems(models or [], live + facts)
    except OnpremError as e:
        raise AnsibleFilterError("serving_gpu_placement: %s" % e)


class FilterModule(object):
    """llmops.onprem serving GPU placement filter."""

    def filters(self):
        return {"serving_gpu_placement": serving_gpu_placement}
