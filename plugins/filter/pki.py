# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the pki role: build a certificate's SAN list from inventory hosts."""

from __future__ import annotations

import ipaddress
import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: pki_sans
short_description: Build a certificate SAN list from inventory hosts
version_added: 0.1.0
description:
  - Returns C(DNS:) and C(IP:) entries for every named inventory host (its inventory name,
    its C(ansible_host) and its service address), followed by the extra entries, without
    duplicates and in a stable order.
  - Fails with a message naming the host when a name is not in the inventory, and naming the
    entry when an extra entry is neither C(DNS:name) nor C(IP:address).
positional: hosts, hostvars, extra, varname
options:
  _input:
    description: Unused; pass the inventory host names as O(hosts).
    type: raw
    required: true
  hosts:
    description: Inventory host names.
    type: list
    elements: str
    required: true
  hostvars:
    description: The C(hostvars) of the play.
    type: dict
    required: true
  extra:
    description: Extra SAN entries, each C(DNS:name) or C(IP:address).
    type: list
    elements: str
    default: []
  varname:
    description: Variable name to use in error messages.
    type: str
    default: pki_cert_hosts
"""

EXAMPLES = r"""
- name: SANs for this host's Redis certificate
  ansible.builtin.debug:
    msg: "{{ None | llmops.onprem.pki_sans([inventory_hostname], hostvars, ['DNS:redis.site.internal']) }}"
"""

RETURN = r"""
_value:
  description: SAN entries such as C(DNS:infra-1) and C(IP:10.89.0.2).
  type: list
  elements: str
"""

_DNS_RE = re.compile(r"^(?=.{1,253}$)(\*\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*$")


def _entry(value):
    """Return a SAN entry for a host name or an address."""
    try:
        return "IP:%s" % ipaddress.ip_address(str(value))
    except ValueError:
        if not _DNS_RE.match(str(value)):
            raise AnsibleFilterError("pki_sans: %r is neither a DNS name nor an IP address" % (value,))
        return "DNS:%s" % str(value).lower()


def _check_extra(item):
    kind, sep, value = str(item).partition(":")
    if not sep or kind not in ("DNS", "IP") or not value:
        raise AnsibleFilterError(
            "pki_cert_extra_sans: %r must look like 'DNS:name' or 'IP:address'" % (item,))
    entry = _entry(value)
    if not entry.startswith(kind + ":"):
        raise AnsibleFilterError(
            "pki_cert_extra_sans: %r has kind %s but %r is %s" % (item, kind, value, entry.split(":")[0]))
    return entry


def pki_sans(_input, hosts, hostvars, extra=None, varname="pki_cert_hosts"):
    """Return the SAN list for ``hosts`` (inventory names) plus ``extra`` entries."""
    if isinstance(hosts, str) or not isinstance(hosts, (list, tuple)):
        raise AnsibleFilterError("%s must be a list of inventory host names, got %r" % (varname, hosts))
    known = set(hostvars.keys()) if hasattr(hostvars, "keys") else set(hostvars)
    unknown = [h for h in hosts if h not in known]
    if unknown:
        raise AnsibleFilterError(
            "%s names %s, which %s not in the inventory; add %s to the inventory or "
            "remove %s from %s" % (
                varname, ", ".join(repr(h) for h in unknown), "is" if len(unknown) == 1 else "are",
                "it" if len(unknown) == 1 else "them", "it" if len(unknown) == 1 else "them", varname))
    out = []
    for host in hosts:
        hv = hostvars[host]
        candidates = [host, hv.get("ansible_host"), hv.get("llmops_service_address")]
        facts = hv.get("ansible_facts") or {}
        candidates.append((facts.get("default_ipv4") or {}).get("address"))
        for value in candidates:
            if value in (None, ""):
                continue
            entry = _entry(value)
            if entry not in out:
                out.append(entry)
    for item in extra or []:
        entry = _check_extra(item)
        if entry not in out:
            out.append(entry)
    return out


class FilterModule(object):
    """llmops.onprem pki filters."""

    def filters(self):
        return {"pki_sans": pki_sans}
