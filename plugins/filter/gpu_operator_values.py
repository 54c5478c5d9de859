# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The NVIDIA GPU operator chart's values for the site: every image from the site registry, pinned."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
from ansible_collections.llmops.onprem.plugins.plugin_utils._gpu_operator import read_chart, site_values

DOCUMENTATION = r"""
name: gpu_operator_values
short_description: Values for the NVIDIA GPU operator chart that take every image from the site registry
version_added: 1.0.0
description:
  - Reads the chart directory's own C(values.yaml), C(Chart.yaml) and its C(node-feature-discovery) subchart, and returns
    the values to install it with - the driver mode, the site's overrides, and every image mapping of the chart
    (C(repository), C(image), C(version); for node-feature-discovery C(image.repository) and C(image.tag)) pointed at the
    site registry through the same mapping as C(llmops.onprem.site_image), with its version written out (the chart's
    C(appVersion) where the chart leaves it empty). Components switched off are pointed there too, so switching one on
    later cannot reach out of the site.
  - The operator composes some images at run time from the ClusterPolicy (driver manager, toolkit, device plugin, GPU
    feature discovery, DCGM and its exporter, MIG manager, validator, node status exporter); they all come from these
    mappings, so the ClusterPolicy names the site registry too.
  - Mode C(host) (the default) is driver-present - C(driver.enabled=false), the host driver from the nvidia_driver stage.
    Mode C(operator) is full mode - the operator's driver container compiles the driver on each node.
  - Refuses, naming the key and the fix - a component without a version, a C(latest) tag, mode C(host) with
    C(driver.enabled=true) in the overrides, C(driver.usePrecompiled), full mode without O(driver_os).
positional: registry
options:
  _input:
    description: The GPU operator chart directory (on the controller).
    type: path
    required: true
  registry:
    description: The site registry C(host[:port]) (C(registry_connection.registry_host)); empty leaves references upstream.
    type: str
    required: true
  mode:
    description: C(host) (driver-present) or C(operator) (full mode).
    type: str
    default: host
  toolkit:
    description: Whether the operator installs the NVIDIA container toolkit on the nodes.
    type: bool
    default: true
  driver_os:
    description: The nodes' OS tags for the driver image in full mode (C(ubuntu22.04), C(rhel9.4)).
    type: list
    elements: str
    default: []
  overrides:
    description: More chart values (the role's C(gpu_operator_values)), merged recursively over the mode settings.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Values for the chart from the bundle
  ansible.builtin.set_fact:
    gpu_operator_chart_values: >-
      {{ llmops_bundle_dir ~ '/charts/gpu-operator'
         | llmops.onprem.gpu_operator_values(registry_connection.registry_host, mode='host') }}
"""

RETURN = r"""
_value:
  description: The chart values (only what differs from the chart's defaults, plus every image mapping).
  type: dict
  sample:
    driver: {enabled: false}
    toolkit: {enabled: true, repository: registry.site.example:5000/nvcr.io/nvidia/k8s, version: v1.20.0}
"""


def gpu_operator_values(chart_dir, registry, mode="host", toolkit=True, driver_os=None, overrides=None):
    try:
        return site_values(read_chart(chart_dir), registry, mode=mode, toolkit=toolkit, driver_os=driver_os,
                           overrides=overrides)
    except OnpremError as e:
        raise AnsibleFilterError(str(e))


class FilterModule(object):
    """llmops.onprem GPU operator filters."""

    def filters(self):
        return {"gpu_operator_values": gpu_operator_values}
