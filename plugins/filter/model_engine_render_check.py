# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The check of model-engine's rendered objects."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils import _model_engine as me
from ansible_collections.llmops.onprem.plugins.module_utils._oci import OnpremError

DOCUMENTATION = r"""
name: model_engine_render_check
short_description: What model-engine's rendered objects name, and what is wrong with them
version_added: 0.2.0
description:
  - Reads the objects C(helm template) rendered (O(_input)) and returns C(images) (each with where it
    is named, including the endpoint templates in ConfigMaps, C(${GIT_TAG}) filled with O(tag)),
    C(secrets) (the Secret names and keys the pods reference), C(references) (every Secret and ConfigMap the
    pods read and the chart does not render itself, with the key when one is named - C(kind), C(namespace),
    C(name), C(key), C(where); objects without a namespace are in the first of O(namespaces)), C(istio) (Istio objects),
    C(public_urls), C(pull_always), and C(problems) - an image outside O(registry) or not among
    O(wanted), untagged or C(latest), C(imagePullPolicy=Always), a public URL, an Istio object.
positional: tag, wanted, registry, namespaces, site_hosts
options:
  _input:
    description: The rendered objects (dicts).
    type: list
    elements: dict
    required: true
  tag:
    description: The model-engine tag (fills C(${GIT_TAG})).
    type: str
    required: true
  wanted:
    description: The images the role maps (C(images) of M(llmops.onprem.model_engine_values#filter)).
    type: list
    elements: dict
    required: true
  registry:
    description: The site registry C(host[:port]).
    type: str
    required: true
  namespaces:
    description: The release and endpoint namespaces (C(<service>.<namespace>) names are cluster names, not public).
    type: list
    elements: str
    default: []
  site_hosts:
    description: The site's own host names (C(site_hosts) of M(llmops.onprem.model_engine_values#filter)); not public.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Check the rendered objects
  ansible.builtin.set_fact:
    model_engine_render: >-
      {{ rendered | llmops.onprem.model_engine_render_check(tag, computed.images, registry_connection.registry_host) }}
"""

RETURN = r"""
_value:
  description: C(images), C(secrets), C(references), C(istio), C(public_urls), C(pull_always), C(problems).
  type: dict
"""


def model_engine_render_check(docs, tag, wanted, registry, namespaces=None, site_hosts=None):
    """The rendered objects' report and problems."""
    docs = [d for d in (docs or []) if isinstance(d, dict) and d]
    try:
        report = me.objects_report(docs, tag, registry, tuple(namespaces or ()), tuple(site_hosts or ()))
        report["references"] = me.references(docs, (namespaces or ["default"])[0])
    except OnpremError as e:
        raise AnsibleFilterError(str(e))
    return dict(report, problems=me.render_problems(report, wanted or [], registry))


class FilterModule(object):
    """llmops.onprem model-engine render check filter."""

    def filters(self):
        return {"model_engine_render_check": model_engine_render_check}
