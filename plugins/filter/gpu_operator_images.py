# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The images the NVIDIA GPU operator chart runs, from the chart's own values, for the bundle spec."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
from ansible_collections.llmops.onprem.plugins.plugin_utils._gpu_operator import chart_images, read_chart, unique_refs

DOCUMENTATION = r"""
name: gpu_operator_images
short_description: Every image the NVIDIA GPU operator chart runs with the site's settings, as bundle_spec.images entries
version_added: 1.0.0
description:
  - Reads the chart directory's own C(values.yaml) (and the C(node-feature-discovery) subchart's) and returns one
    C({ref}) entry per upstream image that the chart deploys or that the operator composes at run time from the
    ClusterPolicy, for the components switched on with these settings - the same settings the gpu_operator role
    installs with. A new chart version brings its new images into the list by itself.
  - The result is meant for the bundle spec on the connected side (C(bundle_spec.images)); the gpu_operator role
    checks the bundle against the same list at the site and stops before installing when any is missing.
  - In mode C(operator) the driver image is listed once per O(driver_os) tag (C(driver:<version>-ubuntu22.04)), the
    name the operator pulls on a node of that OS.
options:
  _input:
    description: The GPU operator chart directory.
    type: path
    required: true
  mode:
    description: C(host) (driver-present, C(driver.enabled=false)) or C(operator) (full mode).
    type: str
    default: host
  toolkit:
    description: Whether the operator installs the NVIDIA container toolkit.
    type: bool
    default: true
  driver_os:
    description: The nodes' OS tags for the driver image in full mode.
    type: list
    elements: str
    default: []
  overrides:
    description: More chart values (the role's C(gpu_operator_values)).
    type: dict
    default: {}
"""

EXAMPLES = r"""
# group_vars/all/bundle.yml on the connected side
bundle_spec:
  images: >-
    {{ [{'ref': 'docker.io/vllm/vllm-openai:v0.34.0'}]
       + ('/srv/charts/gpu-operator' | llmops.onprem.gpu_operator_images(mode='host')) }}
"""

RETURN = r"""
_value:
  description: One C({ref}) per image, sorted by component, without duplicates.
  type: list
  elements: dict
  sample:
    - {ref: nvcr.io/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless}
    - {ref: nvcr.io/nvidia/k8s-device-plugin:v0.20.0}
"""


def gpu_operator_images(chart_dir, mode="host", toolkit=True, driver_os=None, overrides=None):
    try:
        images = chart_images(read_chart(chart_dir), mode=mode, toolkit=toolkit, driver_os=driver_os,
                              overrides=overrides)
    except OnpremError as e:
        raise AnsibleFilterError(str(e))
    return [dict(ref=r) for r in unique_refs(images)]


class FilterModule(object):
    """llmops.onprem GPU operator filters."""

    def filters(self):
        return {"gpu_operator_images": gpu_operator_images}
