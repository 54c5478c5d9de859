# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: which processes listen on an address and TCP port, from `ss -Hltnp` output."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: port_holders
short_description: Find the processes that hold a TCP port on an address, from ss output
version_added: 0.1.0
description:
  - Parses the output of C(ss -Hltnp) (listening TCP sockets, no header, with processes).
  - A socket holds the port on O(address) when its port is O(port) and it listens on that address
    (IPv4-mapped IPv6 included) or on a wildcard (C(0.0.0.0), C(*), C([::])).
positional: address, port
options:
  _input:
    description: Output of C(ss -Hltnp).
    type: str
    required: true
  address:
    description: The IP address the service wants to bind.
    type: str
    required: true
  port:
    description: The TCP port.
    type: int
    required: true
"""

EXAMPLES = r"""
- name: Who else listens on the MinIO port
  ansible.builtin.debug:
    msg: "{{ ss_output.stdout | llmops.onprem.port_holders('10.89.0.2', 9000) }}"
"""

RETURN = r"""
_value:
  description: One entry per listening socket, with C(local) (the address as ss prints it), C(process) and C(pid) (empty and 0 when ss could not tell).
  type: list
  elements: dict
"""

_WILDCARDS = ("0.0.0.0", "*", "::", "")
_USERS = re.compile(r'users:\(\("([^"]*)",pid=(\d+)')


def _split_local(local):
    host, sep, port = local.rpartition(":")
    if not sep:
        return None, None
    host = host.split("%", 1)[0]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.lower().startswith("::ffff:"):
        host = host[7:]
    return host, port


def port_holders(ss_output, address, port):
    """Listening sockets from ``ss -Hltnp`` output that hold ``port`` on ``address``."""
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise AnsibleFilterError("port_holders: port must be a number, got %r" % (port,))
    out = []
    for line in str(ss_output or "").splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] != "LISTEN":
            continue
        host, sport = _split_local(fields[3])
        if sport != str(port) or (host not in _WILDCARDS and host != str(address)):
            continue
        users = _USERS.search(line)
        out.append(dict(local=fields[3], process=users.group(1) if users else "",
                        pid=int(users.group(2)) if users else 0))
    return out


class FilterModule(object):
    """llmops.onprem socket filters."""

    def filters(self):
        return {"port_holders": port_holders}
