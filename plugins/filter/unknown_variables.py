# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: inventory variables that look like the collection's but that no role or play reads."""

from __future__ import annotations

import difflib
import os

import yaml
from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: unknown_variables
short_description: Inventory variables named like the collection's that nothing reads (typos)
version_added: 1.0.0
description:
  - Looks at the variable names (never the values, which are not templated) of each host in O(hosts)
    and returns one line for each name that the collection would read if it were spelled right but
    that no role and no play of the collection knows.
  - A name is checked when it starts with C(llmops_) or with the name of one of the collection's
    roles followed by C(_) (C(redis_), C(vllm_serving_), ...). Other names (C(ansible_*), the site's
    own variables) are not checked.
  - The known names are the options of every entry point in each role's C(meta/argument_specs.yml),
    the keys of each role's C(defaults/main.yml), and O(site_variables), the site-level variables
    the playbooks read (C(playbooks/vars/site_variables.yml)).
  - Each line names the variable, the hosts that have it, and the closest known name when one is
    close (Python's C(difflib)).
  - C(playbooks/site.yml) runs it in its first play and fails the run with the list, before any
    stage, unless C(llmops_allow_unknown_variables) is true.
positional: hosts, site_variables
options:
  _input:
    description: C(hostvars).
    type: dict
    required: true
  hosts:
    description: The hosts whose variables are checked, normally C(groups['all'] + ['localhost']).
    type: list
    elements: str
    required: true
  site_variables:
    description: The site-level variable names the playbooks read (a list, or a dict whose keys are the names).
    type: raw
    default: []
  roles_dir:
    description: The roles whose specs and defaults are known; the collection's own C(roles/) by default.
    type: path
"""

EXAMPLES = r"""
- name: Refuse misspelled variables before any stage
  ansible.builtin.assert:
    that: unknown | length == 0 or llmops_allow_unknown_variables | default(false) | bool
    fail_msg: "unknown variables: {{ unknown | join('; ') }}"
  vars:
    unknown: "{{ hostvars | llmops.onprem.unknown_variables(groups['all'] + ['localhost'], ['llmops_kubeconfig']) }}"
"""

RETURN = r"""
_value:
  description:
    - One line per unknown name, sorted, such as
      C(vllm_serving_model (set for localhost; did you mean vllm_serving_models?)).
  type: list
  elements: str
"""

_ROLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "roles")


def _load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as e:
        raise AnsibleFilterError("unknown_variables: cannot read %s: %s" % (path, e))


def role_variables(roles_dir=None):
    """{role: set of variable names} from each role's argument specs and defaults."""
    roles_dir = roles_dir or _ROLES_DIR
    try:
        names = sorted(n for n in os.listdir(roles_dir) if os.path.isdir(os.path.join(roles_dir, n)))
    except OSError as e:
        raise AnsibleFilterError("unknown_variables: cannot list the roles in %s: %s" % (roles_dir, e))
    out = {}
    for role in names:
        known = set()
        specs = _load(os.path.join(roles_dir, role, "meta", "argument_specs.yml")).get("argument_specs") or {}
        for entry in specs.values():
            known.update((entry or {}).get("options") or {})
        defaults = _load(os.path.join(roles_dir, role, "defaults", "main.yml"))
        if isinstance(defaults, dict):
            known.update(defaults)
        out[role] = known
    return out


def unknown_variables(hostvars, hosts, site_variables=None, roles_dir=None):
    if not isinstance(hosts, (list, tuple)):
        raise AnsibleFilterError("unknown_variables: hosts must be a list of inventory host names, got %r" % (hosts,))
    roles = role_variables(roles_dir)
    known = set(site_variables or [])
    for names in roles.values():
        known |= names
    prefixes = ("llmops_",) + tuple(sorted(r + "_" for r in roles))
    seen = {}
    for host in dict.fromkeys(hosts):
        try:
            names = list(hostvars[host])
        except KeyError:
            continue
        for name in names:
            if isinstance(name, str) and name.startswith(prefixes) and name not in known:
                seen.setdefault(name, []).append(host)
    ordered = sorted(known)
    out = []
    for name in sorted(seen):
        close = difflib.get_close_matches(name, ordered, n=1, cutoff=0.6)
        hint = "did you mean %s?" % close[0] if close else "no known variable is close"
        out.append("%s (set for %s; %s)" % (name, ", ".join(sorted(seen[name])), hint))
    return out


class FilterModule(object):
    """llmops.onprem inventory variable filters."""

    def filters(self):
        return {"unknown_variables": unknown_variables}
