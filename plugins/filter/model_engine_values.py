# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""model-engine's chart values from the site's facts, its images, and the check of its rendered objects."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils import _model_engine as me
from ansible_collections.llmops.onprem.plugins.module_utils._oci import OnpremError

DOCUMENTATION = r"""
name: model_engine_values
short_description: model-engine's chart values from the site's facts, with every problem named
version_added: 0.2.0
description:
  - Returns a dict - C(values) (the chart values for scaleapi/llm-engine's model-engine chart),
    C(problems) (a list of strings, each naming the value and the fix; empty when the values are
    fit for a site without internet), C(images) (every image model-engine names at install and at
    run time, as C(name), C(upstream), C(site)), C(node_labels) (per GPU node the
    C(k8s.amazonaws.com/accelerator) label its GpuType needs) and C(site_hosts) (the site's own
    host names, which the render check does not count as public).
  - The inventory's overrides (C(values)) are merged last, and the problems are those of the
    merged values, so a trap set in the inventory is refused with its fix.
  - Companion filters - M(llmops.onprem.model_engine_images#filter) (the bundle's list of upstream
    references for the same image settings), M(llmops.onprem.model_engine_render_check#filter) (the
    problems of the rendered objects) and M(llmops.onprem.model_engine_missing_images#filter).
options:
  _input:
    description:
      - The settings - C(site_registry), C(namespace), C(endpoint_namespace), C(images), C(redis)
        (redis_connection), C(postgres) (postgres_connection), C(object_store) (minio_connection),
        C(gpu_nodes) (a list of C(name), C(labels)), C(gpu_types), C(node_selector), C(tolerations),
        C(prometheus_address), C(scale_to_zero), C(balloons), C(replicas), C(resources),
        C(pod_security_context), C(container_security_context), C(pull_secret), C(ca_secret),
        C(aws_config_map), C(endpoint_object_store_secret), C(values) (overrides); see the
        model_engine role's argument spec.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Compute the values
  ansible.builtin.set_fact:
    model_engine_computed: "{{ model_engine_settings | llmops.onprem.model_engine_values }}"
"""

RETURN = r"""
_value:
  description: C(values), C(problems), C(images), C(node_labels) and C(site_hosts).
  type: dict
  sample:
    problems: ["celeryBrokerType is 'redis': the chart treats anything but the literal elasticache ..."]
    images: [{name: utilityImages.curl, upstream: docker.io/curlimages/curl:7.72.0,
              site: "registry.site.example:5000/docker.io/curlimages/curl:7.72.0"}]
"""


def _wrap(fn, *args):
    try:
        return fn(*args)
    except OnpremError as e:
        raise AnsibleFilterError(str(e))


def model_engine_values(settings):
    """Values, problems, images and node labels for the settings."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError("model_engine_values: the settings must be a dict, got %s" % type(settings).__name__)
    return _wrap(me.compute, dict(settings))


class FilterModule(object):
    """llmops.onprem model-engine values filter."""

    def filters(self):
        return {"model_engine_values": model_engine_values}
