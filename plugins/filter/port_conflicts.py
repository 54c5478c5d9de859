# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: listening sockets that would keep a service from binding its address and port."""

from __future__ import annotations

import ipaddress
import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: port_conflicts
short_description: Listeners that would keep a service from binding its address and port
version_added: 0.1.0
description:
  - Reads the output of C(ss -Hltnpe) (listening TCP sockets, with their processes and owner
    uids) and returns one line for each socket that holds O(port) on O(address) or on a
    wildcard address and does not belong to the service itself.
  - A socket belongs to the service when its process name is one of O(processes). When the
    process is not visible (C(ss) cannot see processes of other users inside some containers),
    the socket belongs to the service when its owner uid is one of O(uids).
  - Roles call it before installing anything, so that a port held by another program fails the
    run with that program's name instead of a service that cannot start.
positional: port, address, processes, uids
options:
  _input:
    description: Output of C(ss -Hltnpe) on the host.
    type: str
    required: true
  port:
    description: TCP port the service will listen on.
    type: int
    required: true
  address:
    description: Address the service will listen on.
    type: str
    required: true
  processes:
    description: Process names (as C(ss -p) shows them) of the service itself.
    type: list
    elements: str
    default: []
  uids:
    description: Owner uids of the service's sockets, used when the process is not visible.
    type: list
    elements: int
    default: []
"""

EXAMPLES = r"""
- name: List the listening sockets
  ansible.builtin.command: ss -Hltnpe
  register: listeners
  changed_when: false
  check_mode: false

- name: Refuse a port another program holds
  ansible.builtin.assert:
    that: conflicts | length == 0
    fail_msg: "registry_port {{ registry_port }} is in use: {{ conflicts | join('; ') }}"
  vars:
    conflicts: "{{ listeners.stdout | llmops.onprem.port_conflicts(registry_port, registry_bind_address, ['nginx']) }}"
"""

RETURN = r"""
_value:
  description: One line per conflicting socket, such as C(10.89.0.5:5432 held by python3 (pid 812)).
  type: list
  elements: str
"""

_USERS_RE = re.compile(r"users:\(\((.*?)\)\)(?:\s|$)")
_PROCESS_RE = re.compile(r'"([^"]*)",pid=(\d+)')
_UID_RE = re.compile(r"(?:^|\s)uid:(\d+)(?:\s|$)")
_WILDCARDS = ("*", "0.0.0.0", "::")


def _local(field):
    """Split an ss local address (``10.0.0.5:80``, ``[::]:80``, ``*:80``, ``127.0.0.53%lo:53``)."""
    host, sep, port = field.rpartition(":")
    if not sep or not port.isdigit():
        return None, None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.split("%", 1)[0], int(port)


def _same_address(one, other):
    try:
        first, second = ipaddress.ip_address(one), ipaddress.ip_address(other)
    except ValueError:
        return one == other
    first = getattr(first, "ipv4_mapped", None) or first
    second = getattr(second, "ipv4_mapped", None) or second
    return first == second


def port_conflicts(ss_output, port, address, processes=None, uids=None):
    """Return the sockets in ``ss -Hltnpe`` output that clash with ``address:port``."""
    if not isinstance(ss_output, str):
        raise AnsibleFilterError("port_conflicts: expected the text output of 'ss -Hltnpe', got %r" % (ss_output,))
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise AnsibleFilterError("port_conflicts: port must be a number, got %r" % (port,)) from None
    own_names = set(processes or [])
    own_uids = set(int(u) for u in (uids or []))
    found = []
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] != "LISTEN":
            continue
        host, sock_port = _local(fields[3])
        if sock_port != port:
            continue
        if not (host in _WILDCARDS or address in _WILDCARDS or _same_address(host, address)):
            continue
        users = _USERS_RE.search(line)
        procs = _PROCESS_RE.findall(users.group(1)) if users else []
        uid_match = _UID_RE.search(line)
        uid = int(uid_match.group(1)) if uid_match else 0
        if procs:
            if any(name in own_names for name, _pid in procs):
                continue
            names = sorted(set(name for name, _pid in procs))
            pids = sorted(set(int(pid) for _name, pid in procs))
            found.append("%s held by %s (pid %s)" % (fields[3], ", ".join(names), ", ".join(str(p) for p in pids)))
        else:
            if uid in own_uids:
                continue
            found.append("%s held by a process of uid %d (its name is not visible)" % (fields[3], uid))
    return found


class FilterModule(object):
    """llmops.onprem port filters."""

    def filters(self):
        return {"port_conflicts": port_conflicts}
