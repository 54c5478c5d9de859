# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decide which node-cache entries of the served models the vllm_serving role's prune entry point removes."""

from __future__ import annotations

import json
import posixpath
import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: serving_cache_prune
short_description: Which node-cache checkpoint versions of the served models go, and why the others stay
version_added: 0.1.0
description:
  - Takes the checkpoint version directories found in the node cache (C(<cache>/<model>/<manifest digest>), as
    ansible.builtin.find returns them) and returns one entry per directory - removed unless it is the digest the
    model is served with now, or some pod in the cluster still names the digest anywhere in its spec (terminating
    pods included).
  - With O(pods) null (the cluster's pods unknown), nothing but the current digests is known to be unused, so
    nothing is removed.
options:
  _input:
    description: The C(files) of ansible.builtin.find (or plain paths) - directories named by a 64-hex digest.
    type: list
    elements: raw
    required: true
  current:
    description: Model name to the digest it is served with now.
    type: dict
    required: true
  pods:
    description: The cluster's pods (C(resources) of kubernetes.core.k8s_info kind Pod); null when unknown.
    type: list
    elements: dict
"""

EXAMPLES = r"""
- name: Plan the prune
  ansible.builtin.set_fact:
    plan: "{{ found.files | llmops.onprem.serving_cache_prune({'tiny': digest}, pods.resources) }}"
"""

RETURN = r"""
_value:
  description:
    - One entry per directory, sorted by path - C(path), C(model), C(digest), C(remove) (bool) and C(why) (why it
      stays - C(current), C(a pod references it - <namespace>/<pod>, ...) or C(the cluster's pods are unknown (no llmops_kubeconfig))).
  type: list
  elements: dict
"""

DIGEST = re.compile(r"^[0-9a-f]{64}$")


def _pod_refs(pods):
    out = []
    for p in pods:
        meta = p.get("metadata") or {}
        out.append(("%s/%s" % (meta.get("namespace", "?"), meta.get("name", "?")),
                    json.dumps(p.get("spec") or {}, sort_keys=True)))
    return out


def serving_cache_prune(found, current, pods=None):
    if not isinstance(current, dict):
        raise AnsibleFilterError("serving_cache_prune: current must map model names to digests, got %r" % (current,))
    refs = None if pods is None else _pod_refs(pods)
    plan = []
    for f in found or []:
        path = f.get("path") if isinstance(f, dict) else f
        if not isinstance(path, str) or not path:
            raise AnsibleFilterError("serving_cache_prune: an entry without a path: %r" % (f,))
        digest = posixpath.basename(path.rstrip("/"))
        model = posixpath.basename(posixpath.dirname(path.rstrip("/")))
        if not DIGEST.match(digest):
            raise AnsibleFilterError("serving_cache_prune: %s is not named by a 64-hex digest" % path)
        entry = dict(path=path, model=model, digest=digest, remove=False, why="")
        if current.get(model) == digest:
            entry["why"] = "current"
        elif refs is None:
            entry["why"] = "the cluster's pods are unknown (no llmops_kubeconfig)"
        else:
            users = [name for name, spec in refs if digest in spec]
            if users:
                entry["why"] = "a pod references it: " + ", ".join(sorted(users))
            else:
                entry["remove"] = True
        plan.append(entry)
    return sorted(plan, key=lambda e: e["path"])


class FilterModule(object):
    """llmops.onprem serving node-cache filters."""

    def filters(self):
        return {"serving_cache_prune": serving_cache_prune}
