# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: the host-level preflight problems (clocks, names, ports, GPUs, kernel headers) from what the
preflight role collected on every host."""

from __future__ import annotations

import datetime

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: preflight_problems
short_description: Host problems found by the preflight stage, one sentence each with its fix
version_added: 1.0.0
description:
  - Turns what the preflight role collected on every host into problems, each naming the host, what was expected,
    what was found and the fix. An empty list means the hosts are ready.
  - C(clock) - a host whose clock differs from the controller's by more than O(max_skew) seconds (TLS certificates
    and tokens fail past a few minutes). The controller's time is read just before and just after the host's; the
    uncertainty between the two is given to the host.
  - C(names) - a service name that does not resolve on a host, resolves to different addresses on different
    hosts, or resolves to another address than the one its services bind to (C(addresses)).
  - C(ports) - a port a service will listen on that another program holds (the lines of
    P(llmops.onprem.port_conflicts#filter)).
  - C(gpus) - a host of the group C(gpu_nodes) without an NVIDIA GPU on its PCI bus.
  - C(kernel) - a GPU host whose running kernel has no headers package in the bundle, when the bundle carries
    kernel headers at all.
positional: max_skew
options:
  _input:
    description:
      - A dict with any of - C(clock) (list of C(host), C(epoch) - the host's time - and C(before), C(after) - the
        controller's time around it, all in seconds since the epoch); C(names) (dict host -> dict name -> list of
        addresses C(getent hosts) printed, empty when the name did not resolve); C(addresses) (dict name -> the
        address its services bind to, C(llmops_service_address) of that host, where the inventory sets it); C(ports) (list of C(host),
        C(service), C(port), C(variable) - the variable that sets the port - and C(conflicts) - lines of
        P(llmops.onprem.port_conflicts#filter)); C(gpus) (list of C(host), C(state) and C(reason) of
        M(llmops.onprem.nvidia_driver_info)); C(kernel) (C(headers) - the kernel header packages the bundle carries -
        and C(hosts) - list of C(host), C(kernel), C(headers_package)).
    type: dict
    required: true
  max_skew:
    description: Seconds a host's clock may differ from the controller's.
    type: int
    default: 120
"""

EXAMPLES = r"""
- name: Problems of every host
  ansible.builtin.set_fact:
    problems: "{{ {'clock': clock_samples, 'names': lookups} | llmops.onprem.preflight_problems(120) }}"
"""

RETURN = r"""
_value:
  description: "One sentence per problem, such as C(clock: infra-2 reads 2026-12-04T17:00:02Z, 3600 s ahead of the controller ...)."
  type: list
  elements: str
"""


def _iso(epoch):
    return datetime.datetime.fromtimestamp(float(epoch), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def clock_problems(samples, max_skew=120):
    out = []
    for s in samples or []:
        try:
            host_t, before, after = float(s["epoch"]), float(s["before"]), float(s["after"])
        except (KeyError, TypeError, ValueError):
            raise AnsibleFilterError("preflight_problems: a clock sample needs epoch, before and after in seconds, got %r" % (s,)) from None
        if host_t > after:
            skew = host_t - after
        elif host_t < before:
            skew = host_t - before
        else:
            continue
        if abs(skew) <= max_skew:
            continue
        out.append("clock: %s reads %s, %d s %s the controller (%s); at most %d s is allowed: TLS certificates and tokens "
                   "are refused when clocks disagree by minutes. Fix: synchronise %s's clock with the site's time source "
                   "(chrony or systemd-timesyncd), then run again."
                   % (s["host"], _iso(host_t), abs(skew), "ahead of" if skew > 0 else "behind", _iso(after if skew > 0 else before),
                      max_skew, s["host"]))
    return out


def name_problems(lookups, expected=None):
    """lookups: {from_host: {name: [addresses]}}, expected: {name: address the service binds to} -> problems."""
    out = []
    expected = expected or {}
    names = sorted(set(n for per in (lookups or {}).values() for n in (per or {})))
    for name in names:
        seen = {}
        missing = []
        for host in sorted(lookups):
            if name not in (lookups[host] or {}):
                continue
            addrs = tuple(sorted(set(lookups[host][name] or [])))
            if addrs:
                seen.setdefault(addrs, []).append(host)
            else:
                missing.append(host)
        if not seen:
            out.append("names: %s resolves on no host (getent hosts %s found nothing on %s). Fix: add %s to the site's DNS "
                       "(or to /etc/hosts on every host), then run again."
                       % (name, name, ", ".join(missing), name))
            continue
        want = expected.get(name)
        if want:
            wrong = [(a, h) for a, h in sorted(seen.items(), key=lambda kv: kv[1]) if want not in a]
            if wrong:
                out.append("names: %s resolves to %s, but its services bind to %s (llmops_service_address of %s), the address "
                           "its certificates and clients expect. Fix: make the site's DNS or /etc/hosts give %s the address %s, "
                           "or set llmops_service_address of %s to the address it resolves to, then run again."
                           % (name, "; ".join("%s on %s" % (", ".join(a), ", ".join(h)) for a, h in wrong), want, name, name,
                              want, name))
                seen = {}  # one sentence per name: the address is wrong, whether or not the hosts agree
        if len(seen) > 1:
            ways = "; ".join("%s on %s" % (", ".join(a), ", ".join(h)) for a, h in sorted(seen.items(), key=lambda kv: kv[1]))
            out.append("names: %s resolves to different addresses: %s. Every host must reach the same service. Fix: make "
                       "the site's DNS and /etc/hosts agree on one address for %s, then run again." % (name, ways, name))
        if missing:
            if want:
                exp = "%s (llmops_service_address of %s)" % (want, name)
            else:
                best = max(seen.items(), key=lambda kv: len(kv[1]))
                exp = "%s as on %s" % (", ".join(best[0]), ", ".join(best[1]))
            out.append("names: %s does not resolve on %s (getent hosts %s found nothing); expected %s. Fix: add %s "
                       "to the DNS %s (or to /etc/hosts there), then run again."
                       % (name, ", ".join(missing), name, exp, name, "these hosts use" if len(missing) > 1 else "that host uses"))
    return out


def port_problems(ports):
    out = []
    for p in ports or []:
        for c in p.get("conflicts") or []:
            out.append("ports: %s: %s will listen on port %s, but %s. Fix: stop that program (or move it), or set %s to a "
                       "free port, then run again." % (p["host"], p["service"], p["port"], c, p.get("variable") or "the port"))
    return out


def gpu_problems(gpus):
    out = []
    for g in gpus or []:
        if g.get("state") == "no_gpu":
            out.append("gpus: %s is in the group gpu_nodes but has no NVIDIA GPU (%s). Fix: check that the GPUs are seated and "
                       "visible (lspci -nn -d 10de:), or take %s out of gpu_nodes, then run again."
                       % (g["host"], g.get("reason") or "none on the PCI bus", g["host"]))
    return out


def kernel_problems(kernel):
    kernel = kernel or {}
    headers = sorted(set(kernel.get("headers") or []))
    if not headers:
        return []
    out = []
    for h in kernel.get("hosts") or []:
        if h.get("headers_package") and h["headers_package"] not in headers and h.get("state", "install") == "install":
            out.append("kernel: %s runs kernel %s, and the bundle carries kernel headers only for %s, not %s: DKMS could not "
                       "build the NVIDIA driver. Fix: add %s to bundle_spec.packages.names and rebuild the bundle, or boot %s "
                       "into a kernel the bundle has headers for, then run again."
                       % (h["host"], h.get("kernel"), ", ".join(headers), h["headers_package"], h["headers_package"], h["host"]))
    return out


def preflight_problems(data, max_skew=120):
    if not isinstance(data, dict):
        raise AnsibleFilterError("preflight_problems: expected a dict of collected data, got %r" % (data,))
    try:
        max_skew = int(max_skew)
    except (TypeError, ValueError):
        raise AnsibleFilterError("preflight_problems: max_skew must be a number of seconds, got %r" % (max_skew,)) from None
    return (clock_problems(data.get("clock"), max_skew) + name_problems(data.get("names"), data.get("addresses"))
            + port_problems(data.get("ports"))
            + gpu_problems(data.get("gpus")) + kernel_problems(data.get("kernel")))


class FilterModule(object):
    """llmops.onprem preflight filters."""

    def filters(self):
        return {"preflight_problems": preflight_problems}
