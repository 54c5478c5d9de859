# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU facts of nodes, from nvidia-smi output or from the GPU feature discovery node labels."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
from ansible_collections.llmops.onprem.plugins.module_utils._gpu import facts_from_nodes, facts_from_smi

DOCUMENTATION = r"""
name: gpu_node_facts
short_description: One GPU fact per node (product, count, memory, driver, MIG mode, the GFD labels)
version_added: 1.0.0
description:
  - From a list of Kubernetes Node objects (C(kubernetes.core.k8s_info) resources) returns one fact per node that
    carries the NVIDIA GPU feature discovery (GFD) label C(nvidia.com/gpu.product); nodes without it are left out.
  - From a string - the output of
    C(nvidia-smi --query-gpu=index,name,memory.total,driver_version,mig.mode.current,compute_cap --format=csv,noheader,nounits)
    on one host - returns a list with that host's one fact (empty when it lists no GPU); O(node) names it.
  - Each fact holds C(node), C(product) (GFD's spelling, blanks as C(-)), C(count), C(memory_mib), C(driver_version),
    C(mig_mode) (C(Enabled), C(Disabled) or C(N/A)), C(family) (GFD's architecture name), C(compute_cap),
    C(labels) (the GFD labels C(nvidia.com/gpu.product), C(nvidia.com/gpu.family), C(nvidia.com/gpu.memory),
    C(nvidia.com/gpu.count), as GFD writes them), C(gpu_type) (model-engine's GpuType, empty when its enum has none),
    C(products) (product to count, for a node with mixed GPUs) and C(source).
positional: node
options:
  _input:
    description: Node objects, or one host's nvidia-smi query output.
    type: raw
    required: true
  node:
    description: The host name for nvidia-smi output.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Read the GPU nodes
  kubernetes.core.k8s_info:
    kind: Node
  register: nodes

- name: One fact per GPU node
  ansible.builtin.set_fact:
    gpu_nodes: "{{ nodes.resources | llmops.onprem.gpu_node_facts }}"
"""

RETURN = r"""
_value:
  description: One fact per GPU node.
  type: list
  elements: dict
  sample:
    - node: gpu-1
      product: NVIDIA-H100-80GB-HBM3
      count: 8
      memory_mib: 81559
      driver_version: 550.54.15
      mig_mode: Disabled
      family: hopper
      compute_cap: "9.0"
      gpu_type: nvidia-hopper-h100
      labels: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3, nvidia.com/gpu.family: hopper,
               nvidia.com/gpu.memory: "81559", nvidia.com/gpu.count: "8"}
"""


def gpu_node_facts(data, node=""):
    try:
        if isinstance(data, str):
            fact = facts_from_smi(data, node)
            return [fact] if fact else []
        if isinstance(data, (list, tuple)):
            return facts_from_nodes(list(data))
    except OnpremError as e:
        raise AnsibleFilterError("gpu_node_facts: %s" % e)
    raise AnsibleFilterError("gpu_node_facts: expected Node objects (a list) or nvidia-smi output (a string), got %s"
                             % type(data).__name__)


class FilterModule(object):
    """llmops.onprem GPU fact filters."""

    def filters(self):
        return {"gpu_node_facts": gpu_node_facts}
