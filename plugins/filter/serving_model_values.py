# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn one entry of the inventory's vllm_serving_models into the llmops-serving chart's values."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: serving_model_values
short_description: One vllm_serving_models entry as a models[] entry of the llmops-serving chart
version_added: 0.1.0
description:
  - Maps the role's snake_case keys to the chart's keys (C(served_name) to C(servedName), C(gpu_product) to
    C(gpuProduct), C(lora_modules) to C(loraModules), C(ingress_host) to C(ingressHost), C(startup_failure_threshold)
    to C(startupFailureThreshold)) and keeps C(name), C(checkpoint), C(gpus), C(preset), C(args), C(quantization),
    C(replicas), C(resources), C(load), C(device) (C(cpu), C(gpu) or C(auto); the chart picks the engine flags and
    requests from it). Other keys pass through unchanged - the chart's C(values.schema.json) is the one place
    a model entry is checked, and refuses them naming the entry and the key (the vllm_serving role runs
    C(helm template) before it creates anything).
  - A C(checkpoint.name) takes C(bucket), C(prefix), C(digest) and C(bytes) from the entry of that name in
    O(synced) (the checkpoints stage's C(checkpoints_synced)); keys given next to it win.
options:
  _input:
    description: One entry of C(vllm_serving_models).
    type: dict
    required: true
  synced:
    description: The checkpoints stage's C(checkpoints_synced) (name, bucket, prefix, digest, bytes per checkpoint).
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Chart values of every model
  ansible.builtin.set_fact:
    models: "{{ vllm_serving_models | map('llmops.onprem.serving_model_values') | list }}"
"""

RETURN = r"""
_value:
  description: The chart's models[] entry.
  type: dict
  sample: {"name": "chat", "servedName": "Llama-3-8B-Instruct", "gpus": 1, "preset": "chat",
           "checkpoint": {"prefix": "models/llama", "digest": "...", "bytes": 16060000000}}
"""

RENAMED = {
    "served_name": "servedName",
    "gpu_product": "gpuProduct",
    "lora_modules": "loraModules",
    "ingress_host": "ingressHost",
    "startup_failure_threshold": "startupFailureThreshold",
}

# Keys of a role model entry that are not chart values: C(chat) tells endpoint_ready whether to check a chat answer.
PROBE_ONLY = ("chat",)


def _resolve(name, checkpoint, synced):
    """checkpoint.name -> bucket/prefix/digest/bytes of that entry of the checkpoints stage's checkpoints_synced."""
    if not checkpoint.get("name"):
        return checkpoint
    found = [c for c in synced or [] if c.get("name") == checkpoint["name"]]
    if not found:
        raise AnsibleFilterError("vllm_serving_models[%s].checkpoint.name %r is not among the synced checkpoints (%s): "
                                 "run the checkpoints stage first, or give bucket/prefix/digest/bytes"
                                 % (name, checkpoint["name"], ", ".join(sorted(c.get("name", "?") for c in synced or [])) or "none"))
    out = dict((k, found[0][k]) for k in ("bucket", "prefix", "digest", "bytes") if found[0].get(k) is not None)
    out.update((k, v) for k, v in checkpoint.items() if k != "name" and v is not None)
    return out


def serving_model_values(model, synced=None):
    if not isinstance(model, dict):
        raise AnsibleFilterError("serving_model_values: a model must be a dict, got %r" % (model,))
    name = model.get("name", "?")
    checkpoint = model.get("checkpoint") or {}
    out = {}
    for key, value in model.items():
        if value is None or key in PROBE_ONLY:
            continue
        out[RENAMED.get(key, key)] = value
    checkpoint = _resolve(name, checkpoint, synced)
    if checkpoint:
        out["checkpoint"] = dict(checkpoint)
    if "bytes" in checkpoint:
        out["checkpoint"]["bytes"] = int(checkpoint["bytes"])
    if "gpus" in out:
        out["gpus"] = int(out["gpus"])
    return out


class FilterModule(object):
    """llmops.onprem serving values filters."""

    def filters(self):
        return {"serving_model_values": serving_model_values}
