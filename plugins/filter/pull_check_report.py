# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read the per-node image pull check pods and their events: which pulls are still pending, and why a pull failed."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: pull_check_report
short_description: Diagnose the per-node image pull check pods of the image_mirror role
version_added: 0.1.0
description:
  - Takes the pull check pods (C(kubernetes.core.k8s_info) resources) and the events of their namespace and returns
    one entry per pod - its node, its image, whether the pull worked, the event reason, a diagnosis and the likely fix.
  - Diagnoses C(x509) (the node does not trust the registry's CA), C(unauthorized) (credentials), C(not found)
    (the image is not in the site registry), C(unreachable) (the registry, or the upstream registry when the node has
    no mirror for it), C(InvalidImageName), and a still pending pull (C(timeout)).
  - A pod whose pull has neither worked nor failed yet is C(pending); with O(final=true) it is reported as C(timeout).
positional: events, registry, final
options:
  _input:
    description: The pull check pods.
    type: list
    elements: dict
    required: true
  events:
    description: Events of the pods' namespace.
    type: list
    elements: dict
    required: true
  registry:
    description: The site registry C(host[:port]), to tell a pull that went upstream from one that reached the mirror.
    type: str
    required: true
  final:
    description: The last look - a pull still pending has timed out.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Diagnose the pulls
  ansible.builtin.set_fact:
    report: "{{ pods.resources | llmops.onprem.pull_check_report(events.resources, '10.0.0.5:5000') }}"
"""

RETURN = r"""
_value:
  description: One entry per pod.
  type: list
  elements: dict
  contains:
    node: {description: Node name., type: str}
    image: {description: Image reference the pod pulled., type: str}
    ok: {description: The image was pulled (the container left the waiting state)., type: bool}
    reason: {description: Waiting or event reason (C(ErrImagePull), C(ImagePullBackOff), ...)., type: str}
    diagnosis: {description: "C(ok), C(x509), C(unauthorized), C(not found), C(unreachable), C(upstream), C(invalid name),
                C(pending), C(timeout) or C(unknown).", type: str}
    message: {description: The runtime's message from the pod's events., type: str}
    fix: {description: The likely fix., type: str}
"""

_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable")

_FIXES = {
    "x509": "the node does not trust the site registry's certificate: re-run the image_mirror role on {node} (it puts "
            "the site CA in the registry's hosts.toml, ca = ...), and check that the registry certificate's SANs "
            "include {registry}",
    "unauthorized": "the site registry refused the node's credentials: re-run the image_mirror role on {node} with "
                    "the pull user's current password (image_mirror_pull_user / image_mirror_pull_password), or give "
                    "the pod an imagePullSecret from cluster_secrets",
    "not found": "the image is not in the site registry: add {image} to the bundle and mirror it with "
                 "llmops.onprem.oci_mirror",
    "unreachable": "the node cannot reach the site registry {registry}: check the registry service, the firewall "
                   "and the address in the node's hosts.toml",
    "upstream": "the node went to the upstream registry instead of the mirror: {node} has no mirror for this registry; "
                "run the image_mirror role on it (hosts.toml under containerd's config_path) and make sure "
                "containerd's config.toml sets config_path (that change needs one containerd restart)",
    "invalid name": "the image reference is malformed; fix image_mirror_check_image",
    "timeout": "the pull did not finish in time: look at the node's containerd log and the registry's load",
    "unknown": "read the message; the node's containerd log has the details",
}


def _events_for(events, pod):
    name = pod.get("metadata", {}).get("name")
    out = [e for e in events or [] if (e.get("involvedObject") or {}).get("name") == name]
    return sorted(out, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def _state(pod):
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    if not statuses:
        return None, None, ""
    st = statuses[0].get("state") or {}
    if "waiting" in st:
        w = st["waiting"] or {}
        return "waiting", w.get("reason"), w.get("message") or ""
    return ("running" if "running" in st else "terminated"), None, ""


def diagnose(message, reason, registry):
    m = (message or "").lower()
    if reason == "InvalidImageName" or "invalid reference format" in m:
        return "invalid name"
    if "x509" in m or "certificate" in m:
        return "x509"
    if "401" in m or "unauthorized" in m or "authorization failed" in m or "403 forbidden" in m:
        return "unauthorized"
    if "not found" in m or "manifest unknown" in m or "404" in m:
        return "not found"
    hosts = re.findall(r'https?://([^/\s"]+)', message or "")
    if any(word in m for word in ("no such host", "connection refused", "i/o timeout", "no route to host",
                                  "dial tcp", "network is unreachable", "context deadline exceeded")):
        if hosts and registry and registry.split("/", 1)[0] not in hosts:
            return "upstream"
        return "unreachable"
    return "unknown"


def pull_check_report(pods, events, registry, final=False):
    if not isinstance(pods, list):
        raise AnsibleFilterError("pull_check_report: expected a list of pods, got %r" % type(pods).__name__)
    out = []
    for pod in pods:
        spec = pod.get("spec") or {}
        node = spec.get("nodeName") or ""
        image = (spec.get("containers") or [{}])[0].get("image", "")
        state, reason, wmsg = _state(pod)
        if state in ("running", "terminated"):
            out.append(dict(node=node, image=image, ok=True, reason="Pulled", diagnosis="ok", message="", fix=""))
            continue
        evs = [e for e in _events_for(events, pod) if e.get("type") == "Warning"]
        # The runtime's own error is in "Failed to pull image ..."; later events only say "Error: ImagePullBackOff".
        pulls = [e for e in evs if (e.get("message") or "").startswith("Failed to pull image")]
        failed = pulls or [e for e in evs if e.get("reason") == "Failed"]
        message = (failed[-1].get("message") if failed else (wmsg or (evs[-1].get("message") if evs else ""))) or ""
        if reason not in _PULL_FAILURES and not failed:
            if not final:
                out.append(dict(node=node, image=image, ok=False, reason=reason or "Pending", diagnosis="pending",
                                message=message.strip(), fix=""))
                continue
            diag = "timeout"
        else:
            diag = diagnose(message + " " + wmsg, reason, registry)
        out.append(dict(node=node, image=image, ok=False, reason=reason or "Pending", diagnosis=diag,
                        message=message.strip(), fix=_FIXES[diag].format(node=node, image=image, registry=registry)))
    return sorted(out, key=lambda r: r["node"])


class FilterModule(object):
    """llmops.onprem pull check filters."""

    def filters(self):
        return {"pull_check_report": pull_check_report}
