# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""endpoint_ready's endpoints for the vllm_serving role's models, from the Services the chart made."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

VIA = ("portforward", "proxy", "direct", "ingress")

DOCUMENTATION = r"""
name: serving_endpoints
short_description: The endpoints llmops.onprem.endpoint_ready waits for, one per served model
version_added: 0.1.0
description:
  - For each C(vllm_serving_models) entry, the URL of its Service (C(http://<clusterIP>:<port>)) or of its Ingress
    (C(https://<ingress_host>)), its served name, the namespace and label selector of its pods, and how
    endpoint_ready reaches it (its C(via), and for C(proxy) the Service's name).
options:
  _input:
    description: C(vllm_serving_models).
    type: list
    elements: dict
    required: true
  services:
    description: The Services of the release (kubernetes.core.k8s_info resources).
    type: list
    elements: dict
    required: true
  release:
    description: The Helm release name.
    type: str
    required: true
  namespace:
    description: The release's namespace.
    type: str
    required: true
  via:
    description:
      - C(portforward) (a port-forward to a pod of the model, through the API server), C(proxy) (the API server's
        service proxy; it drops the API key), C(direct) (the Service's ClusterIP from the controller itself) or
        C(ingress) (C(https://<ingress_host>), directly).
    type: str
    default: portforward
  api_key:
    description: API key to send (kept out of logs by endpoint_ready).
    type: str
  ca_file:
    description: CA file for https URLs.
    type: str
"""

EXAMPLES = r"""
- name: Endpoints of the served models
  ansible.builtin.set_fact:
    endpoints: "{{ vllm_serving_models | llmops.onprem.serving_endpoints(services.resources, 'llmops-serving', 'llmops') }}"
"""

RETURN = r"""
_value:
  description: endpoint_ready's O(endpoints).
  type: list
  elements: dict
  sample: [{"name": "chat", "url": "http://10.0.0.12:8000", "model": "chat", "namespace": "llmops",
            "selector": "app.kubernetes.io/instance=llmops-serving,llmops.onprem/model=chat", "via": "portforward"}]
"""


def serving_endpoints(models, services, release, namespace, via="portforward", api_key=None, ca_file=None):
    """endpoint_ready's endpoints for the role's models, from the Services the chart made."""
    if via not in VIA:
        raise AnsibleFilterError("vllm_serving_probe_via is %r: one of %s" % (via, ", ".join(VIA)))
    by_name = dict((s["metadata"]["name"], s) for s in services or [])
    out = []
    for m in models:
        obj = ("%s-%s" % (release, m["name"]))[:63].rstrip("-")
        if via == "ingress":
            if not m.get("ingress_host"):
                raise AnsibleFilterError("vllm_serving_models[%s]: probing via ingress needs its ingress_host" % m["name"])
            url = "https://%s" % m["ingress_host"]
        else:
            svc = by_name.get(obj)
            if svc is None:
                raise AnsibleFilterError("no Service %s in %s: is the chart installed?" % (obj, namespace))
            url = "http://%s:%s" % (svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"])
        ep = dict(name=m["name"], url=url, model=m.get("served_name") or m["name"], namespace=namespace,
                  selector="app.kubernetes.io/instance=%s,llmops.onprem/model=%s" % (release, m["name"]),
                  via="direct" if via == "ingress" else via)
        if via == "proxy":
            ep["service"] = obj
        if api_key:
            ep["api_key"] = api_key
        if ca_file:
            ep["ca_file"] = ca_file
        if m.get("chat") is False:
            ep["chat"] = False  # a base model without a chat template: completions only
        out.append(ep)
    return out


class FilterModule(object):
    """llmops.onprem serving endpoint filters."""

    def filters(self):
        return {"serving_endpoints": serving_endpoints}
