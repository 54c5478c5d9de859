# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: what is wrong with a list of CIDR networks meant for an allow list."""

from __future__ import annotations

import ipaddress

DOCUMENTATION = r"""
name: cidr_problems
short_description: Check a list of CIDR networks meant for an allow list
version_added: 0.1.0
description:
  - Returns one sentence per problem in the list; an empty list means every entry is an IPv4 or
    IPv6 network in CIDR form with its host bits zero.
  - Refuses an empty list, entries without a prefix length, entries with host bits set (naming
    the network that was probably meant) and C(/0) networks, which would allow every address.
options:
  _input:
    description: The networks, such as C(["10.20.0.0/16", "192.0.2.10/32"]).
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Refuse a bad allow list
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "postgres_allowed_networks: {{ problems | join('; ') }}"
  vars:
    problems: "{{ postgres_allowed_networks | llmops.onprem.cidr_problems }}"
"""

RETURN = r"""
_value:
  description: Problems, such as C('10.1.2.3/24' has host bits set; the network is 10.1.2.0/24).
  type: list
  elements: str
"""


def cidr_problems(networks):
    """Return the problems of ``networks`` (a list of CIDR strings); empty when all are fine."""
    if isinstance(networks, (str, bytes)) or not isinstance(networks, (list, tuple)):
        return ["expected a list of CIDR networks, got %r" % (networks,)]
    if not networks:
        return ["the list is empty, so no client could connect"]
    problems = []
    for item in networks:
        text = str(item).strip()
        if "/" not in text:
            problems.append("%r has no prefix length (write a single address as %s/32)" % (text, text))
            continue
        try:
            net = ipaddress.ip_network(text)
        except ValueError:
            try:
                loose = ipaddress.ip_network(text, strict=False)
            except ValueError:
                problems.append("%r is not an IPv4 or IPv6 network in CIDR form" % (text,))
            else:
                problems.append("%r has host bits set; the network is %s" % (text, loose))
            continue
        if net.prefixlen == 0:
            problems.append("%r allows every address; list the site's networks instead" % (text,))
    return problems


class FilterModule(object):
    """llmops.onprem network filters."""

    def filters(self):
        return {"cidr_problems": cidr_problems}
