# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: the cluster-level preflight problems (nodes, GPUs, quotas, CRDs) from what k8s_info read."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: cluster_problems
short_description: Cluster problems found by the preflight stage, one sentence each with its fix
version_added: 1.0.0
description:
  - Turns the cluster objects the preflight role read into problems, each naming the object, what was expected, what
    was found and the fix. An empty list means the cluster is ready for the enabled stages.
  - Nodes that are not C(Ready); GPUs the models ask for (C(gpus) times C(replicas) of each model of
    C(vllm_serving_models)) against the C(nvidia.com/gpu) allocatable of the Ready nodes, and a model that asks more
    GPUs per replica than any one node has; C(ResourceQuota) objects of the stack's namespaces whose GPU, pod, CPU or
    memory room is smaller than what the models ask; the CRDs the enabled features need.
options:
  _input:
    description:
      - A dict with C(nodes) (Node objects), C(quotas) (ResourceQuota objects), C(crds) (names of the
        CustomResourceDefinitions the cluster has), C(wanted_crds) (list of C(name) and C(why) - the feature that
        needs it), C(models) (the entries of C(vllm_serving_models)) and C(namespace) (where the models run).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Cluster problems
  ansible.builtin.set_fact:
    problems: >-
      {{ {'nodes': nodes.resources, 'quotas': quotas.resources, 'crds': crd_names, 'wanted_crds': wanted,
          'models': vllm_serving_models, 'namespace': 'llmops'} | llmops.onprem.cluster_problems }}
"""

RETURN = r"""
_value:
  description: "One sentence per problem, such as C(cluster: node gpu-2 is not Ready (KubeletNotReady ...))."
  type: list
  elements: str
"""

GPU = "nvidia.com/gpu"
_SUFFIX = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
           "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18, "m": 0.001}


def quantity(value):
    """A Kubernetes quantity ('4', '500m', '16Gi') as a float."""
    text = str(value).strip()
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if text.endswith(suffix) and text[:-len(suffix)]:
            try:
                return float(text[:-len(suffix)]) * _SUFFIX[suffix]
            except ValueError:
                break
    try:
        return float(text)
    except ValueError:
        raise AnsibleFilterError("cluster_problems: %r is not a Kubernetes quantity" % (value,)) from None


def _ready(node):
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True", "%s: %s" % (c.get("reason") or "no reason", c.get("message") or "no message")
    return False, "no Ready condition"


def _model_gpus(m):
    device = m.get("device", "auto")
    gpus = int(m.get("gpus", 0) or 0)
    return 0 if device == "cpu" else gpus


def _n(v):
    return ("%g" % v)


def cluster_problems(data):
    if not isinstance(data, dict):
        raise AnsibleFilterError("cluster_problems: expected a dict of cluster objects, got %r" % (data,))
    out = []
    nodes = data.get("nodes") or []
    if not nodes:
        out.append("cluster: the API answered but lists no node. Fix: join the nodes to the cluster (kubectl get nodes), "
                   "then run again.")
    ready_gpus = []
    for n in nodes:
        name = (n.get("metadata") or {}).get("name")
        ok, why = _ready(n)
        if not ok:
            out.append("cluster: node %s is not Ready (%s); pods scheduled there will not start. Fix: repair the node "
                       "(kubectl describe node %s) or drain and remove it, then run again." % (name, why, name))
            continue
        ready_gpus.append((name, quantity(((n.get("status") or {}).get("allocatable") or {}).get(GPU, 0))))
    models = data.get("models") or []
    asked = sum(_model_gpus(m) * int(m.get("replicas", 1) or 1) for m in models)
    total = sum(g for _n_, g in ready_gpus)
    if asked > total:
        per = ", ".join("%s %s" % (m.get("name"), _model_gpus(m) * int(m.get("replicas", 1) or 1)) for m in models if _model_gpus(m))
        out.append("cluster: the models ask for %d GPUs (%s) and the Ready nodes have %s allocatable (%s). Fix: add GPU nodes, "
                   "check that the GPU operator's device plugin runs on every GPU node (nvidia.com/gpu in the node's "
                   "allocatable), or lower gpus or replicas in vllm_serving_models, then run again."
                   % (asked, per, _n(total), ", ".join("%s %s" % (nm, _n(g)) for nm, g in ready_gpus) or "no Ready node"))
    biggest = max([g for _nm, g in ready_gpus] or [0])
    for m in models:
        if 0 < biggest < _model_gpus(m):
            out.append("cluster: model %s asks %d GPUs per replica, and no Ready node has more than %s: its pods would stay "
                       "Pending. Fix: lower its gpus (tensor parallel size) or add a node with %d GPUs, then run again."
                       % (m.get("name"), _model_gpus(m), _n(biggest), _model_gpus(m)))
    namespace = data.get("namespace")
    cpu_pods = sum(int(m.get("replicas", 1) or 1) for m in models)
    for q in data.get("quotas") or []:
        meta = q.get("metadata") or {}
        status = q.get("status") or {}
        hard, used = status.get("hard") or (q.get("spec") or {}).get("hard") or {}, status.get("used") or {}
        want = {}
        if meta.get("namespace") == namespace:
            want = {"requests." + GPU: asked, "pods": cpu_pods, "count/pods": cpu_pods}
        for key, need in sorted(want.items()):
            if key not in hard or not need:
                continue
            room = quantity(hard[key]) - quantity(used.get(key, 0))
            if room < need:
                out.append("cluster: ResourceQuota %s/%s allows %s %s (%s used, %s left), and the models need %d. Fix: raise "
                           "the quota's %s (kubectl edit resourcequota -n %s %s), or serve fewer replicas, then run again."
                           % (meta.get("namespace"), meta.get("name"), _n(quantity(hard[key])), key,
                              _n(quantity(used.get(key, 0))), _n(room), need, key, meta.get("namespace"), meta.get("name")))
    have = set(data.get("crds") or [])
    for w in data.get("wanted_crds") or []:
        if w["name"] not in have:
            out.append("cluster: the CustomResourceDefinition %s is missing, and %s needs it. Fix: install it (from the "
                       "bundle) before the stage, or turn the feature off, then run again." % (w["name"], w["why"]))
    return out


class FilterModule(object):
    """llmops.onprem cluster filters."""

    def filters(self):
        return {"cluster_problems": cluster_problems}
