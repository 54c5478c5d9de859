# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: bytes needed versus bytes free for every destination of a bundle, as rows, a table and problems."""

from __future__ import annotations

import math

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils._bundle import human

DOCUMENTATION = r"""
name: capacity_plan
short_description: Bytes needed versus bytes free for every destination of a bundle
version_added: 1.0.0
description:
  - Takes one entry per destination (a host and a path that will receive bytes) with the bytes it needs and what
    M(llmops.onprem.path_space) read for it, and returns the plan - one row per destination, a text table with aligned
    columns, and one problem per filesystem that is too small.
  - Destinations of one host on the same filesystem (same device) are added up - a package repository and a database
    on the same root filesystem must fit together.
  - A destination without C(space) has an unknown free space (an object store whose free space cannot be read) - it
    is listed with C(unknown) and is no problem.
  - Needed bytes are the entry's C(needed) less what the path already holds (C(space.used), a re-run), plus
    O(headroom).
options:
  _input:
    description:
      - The destinations - dicts with C(host), C(destination) (words, such as C(package repository)), C(path),
        C(needed) (bytes), C(space) (one entry of M(llmops.onprem.path_space)'s C(paths), or null when unknown),
        C(unknown) (why the free space is unknown, when C(space) is null) and C(fix) (how to point the destination
        elsewhere, such as C(set packages_repo_dir to a path on a larger filesystem)).
    type: list
    elements: dict
    required: true
  headroom:
    description: Fraction added to the needed bytes (C(0.05) is 5 %).
    type: float
    default: 0.0
"""

EXAMPLES = r"""
- name: Plan
  ansible.builtin.set_fact:
    plan: "{{ destinations | llmops.onprem.capacity_plan(0.05) }}"

- name: Show the table
  ansible.builtin.debug:
    msg: "{{ plan.table }}"
"""

RETURN = r"""
_value:
  description:
    - C(rows) (C(host), C(destination), C(path), C(filesystem), C(needed), C(free) - null when unknown - and C(status) -
      C(ok), C(TOO SMALL) or C(unknown)), C(table) (lines of text) and C(problems) (sentences, each naming the host,
      the destination, what is needed, what is free and the fix).
  type: dict
"""

HEADERS = ("host", "destination", "path", "filesystem", "needed", "free", "status")


def _int(value, what):
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise AnsibleFilterError("capacity_plan: %s must be a number of bytes, got %r" % (what, value)) from None
    if n < 0:
        raise AnsibleFilterError("capacity_plan: %s must not be negative, got %d" % (what, n))
    return n


def _size(n):
    return "%s (%d bytes)" % (human(n), n)


def table(rows):
    cells = [list(HEADERS)] + [[str(r["host"]), str(r["destination"]), str(r["path"]), str(r["filesystem"]),
                                human(r["needed"]), "unknown" if r["free"] is None else human(r["free"]), r["status"]]
                               for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    return ["  ".join(c.ljust(w) for c, w in zip(cell, widths)).rstrip() for cell in cells]


def capacity_plan(destinations, headroom=0.0):
    """Rows, table and problems for ``destinations`` (see DOCUMENTATION)."""
    if not isinstance(destinations, (list, tuple)):
        raise AnsibleFilterError("capacity_plan: expected a list of destinations, got %r" % (destinations,))
    try:
        headroom = float(headroom)
    except (TypeError, ValueError):
        raise AnsibleFilterError("capacity_plan: headroom must be a fraction such as 0.05, got %r" % (headroom,)) from None
    rows, groups = [], {}
    for d in destinations:
        if not isinstance(d, dict) or not {"host", "destination", "path", "needed"} <= set(d):
            raise AnsibleFilterError("capacity_plan: each destination needs host, destination, path and needed, got %r" % (d,))
        space = d.get("space")
        want = _int(d["needed"], "needed of %s on %s" % (d["destination"], d["host"]))
        if space:
            want = max(0, want - _int(space.get("used") or 0, "used"))
        want = int(math.ceil(want * (1.0 + headroom)))
        row = {"host": d["host"], "destination": d["destination"], "path": d["path"], "needed": want,
               "free": None, "filesystem": "-", "status": "unknown", "fix": d.get("fix") or "", "unknown": d.get("unknown") or ""}
        if space:
            row["free"] = _int(space["free"], "free")
            row["filesystem"] = space.get("mount") or space.get("checked") or "?"
            row["status"] = "ok"
            groups.setdefault((d["host"], space.get("device", row["filesystem"])), []).append(row)
        rows.append(row)
    problems = []
    for (host, _dev), members in groups.items():
        total = sum(r["needed"] for r in members)
        free = members[0]["free"]
        if total <= free:
            continue
        for r in members:
            r["status"] = "TOO SMALL"
        fixes = "; ".join(sorted(set(r["fix"] for r in members if r["fix"])))
        if len(members) == 1:
            r = members[0]
            problems.append(
                "capacity: %s: %s at %s needs %s, the filesystem %s holding it has %s free. Fix: free %s on %s, mount a "
                "larger filesystem at %s%s, then run again."
                % (host, r["destination"], r["path"], _size(total), r["filesystem"], _size(free), human(total - free),
                   r["filesystem"], r["path"], ", or " + fixes if fixes else ""))
        else:
            parts = ", ".join("%s at %s (%s)" % (r["destination"], r["path"], human(r["needed"])) for r in members)
            problems.append(
                "capacity: %s: %s share the filesystem %s and together need %s; it has %s free. Fix: free %s on %s, or move "
                "one of them to another filesystem%s, then run again."
                % (host, parts, members[0]["filesystem"], _size(total), _size(free), human(total - free),
                   members[0]["filesystem"], " (" + fixes + ")" if fixes else ""))
    out_rows = [{k: r[k] for k in ("host", "destination", "path", "filesystem", "needed", "free", "status")} for r in rows]
    for r, src in zip(out_rows, rows):
        if src["status"] == "unknown" and src["unknown"]:
            r["unknown"] = src["unknown"]
    return {"rows": out_rows, "table": table(out_rows), "problems": problems}


class FilterModule(object):
    """llmops.onprem capacity filters."""

    def filters(self):
        return {"capacity_plan": capacity_plan}
