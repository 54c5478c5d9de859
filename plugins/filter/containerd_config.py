# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Set the CRI registry's config_path in a containerd config.toml, in the table that the file's config version names."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

try:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError
except ImportError:  # pragma: no cover - reported when the filter is used
    tomlkit = None
    TOMLKitError = Exception

DOCUMENTATION = r"""
name: containerd_config_path
short_description: Set the CRI registry's C(config_path) in a containerd C(config.toml)
version_added: 1.0.0
description:
  - Parses a containerd C(config.toml) with a TOML parser (comments and layout kept) and sets C(config_path) in the
    CRI plugin's registry table, the one that makes containerd read per-registry C(hosts.toml) files.
  - The table follows the file's C(version) - C(2) (containerd 1.6 and 1.7, also read by 2.x)
    C([plugins."io.containerd.grpc.v1.cri".registry]); C(3) (containerd 2.x)
    C([plugins."io.containerd.cri.v1.images".registry]). Other tables that hold a C(config_path), such as 1.7's and
    2.x's transfer service C([plugins."io.containerd.transfer.v1.local"]), are left alone. The table is created when
    it is missing.
  - An empty input (no file yet, or only comments) becomes a minimal version 2 configuration with that table.
  - Returns the input unchanged, byte for byte, when C(config_path) already has the value.
  - Refuses, naming the file, text that is not TOML, a config version 1 file (no C(version) key), an unknown version,
    and registry C(mirrors) or C(configs) entries in the table (containerd refuses those together with
    C(config_path)); empty C(mirrors)/C(configs) tables, as in the default configuration of 1.6 and 1.7, are accepted.
  - Needs the C(tomlkit) Python package on the controller.
positional: hosts_dir, name, table
options:
  _input:
    description: The text of C(config.toml); empty when the file does not exist.
    type: str
    required: true
  hosts_dir:
    description: The directory of the per-registry C(hosts.toml) files, the value for C(config_path).
    type: str
    required: true
  name:
    description: How to name the file in error messages (its path and host).
    type: str
    default: config.toml
  table:
    description:
      - The registry table as a dotted TOML key, for example C(plugins."io.containerd.grpc.v1.cri".registry).
      - Empty - the table of the file's config version.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Compute containerd's configuration with config_path
  ansible.builtin.set_fact:
    new_config: "{{ old_config | llmops.onprem.containerd_config_path('/etc/containerd/certs.d', '/etc/containerd/config.toml') }}"
"""

RETURN = r"""
_value:
  description: The new text of C(config.toml); the input itself when nothing changes.
  type: str
"""

# config version -> the CRI registry table (containerd 1.x reads version 2; 2.x reads 3, and migrates 2 when it loads)
REGISTRY_TABLES = {
    2: ("plugins", "io.containerd.grpc.v1.cri", "registry"),
    3: ("plugins", "io.containerd.cri.v1.images", "registry"),
}
NEW_FILE_HEADER = "# Written by llmops.onprem.image_mirror: containerd's defaults, plus the registry host directory.\n"


def dotted(keys):
    """A TOML dotted key for messages: plugins."io.containerd.grpc.v1.cri".registry."""
    return ".".join(k if k.replace("_", "").replace("-", "").isalnum() else '"%s"' % k for k in keys)


def parse_table(name, table):
    """Split a dotted TOML key (as the role variable gives it) into its parts, with the TOML parser itself."""
    try:
        doc = tomlkit.parse("[%s]\n" % table)
    except TOMLKitError as e:
        raise AnsibleFilterError("containerd_config_path: the table %r for %s is not a dotted TOML key (%s); give it as "
                                 'plugins."io.containerd.grpc.v1.cri".registry, or leave it empty to follow the '
                                 "file's config version" % (table, name, e))
    keys = []
    node = doc
    while len(node) == 1:
        key = next(iter(node))
        keys.append(str(key))
        node = node[key]
    return tuple(keys)


def config_version(name, doc):
    version = doc.get("version")
    if version is None:
        if doc:
            raise AnsibleFilterError(
                "%s has no 'version' key: it is a containerd config version 1 file, whose plugin names "
                "(plugins.cri) containerd 2.x no longer reads. Convert it with 'containerd config migrate' (containerd "
                "1.7 and later) or replace it with the output of 'containerd config default', then run again" % name)
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version not in REGISTRY_TABLES:
        raise AnsibleFilterError(
            "%s has config version %r; this filter knows version 2 (containerd 1.6 and 1.7) and 3 (containerd 2.x). "
            "Check the file against 'containerd config default' of the node's containerd" % (name, version))
    return int(version)


def containerd_config_path(config_text, hosts_dir, name="config.toml", table=""):
    """Return config_text with config_path = hosts_dir in the CRI registry table; the same text when it is set already."""
    if tomlkit is None:
        raise AnsibleFilterError("containerd_config_path needs the Python package tomlkit on the controller "
                                 "(the collection's requirements.txt); install it into the controller's Python")
    if not isinstance(config_text, str) or not isinstance(hosts_dir, str) or not hosts_dir:
        raise AnsibleFilterError("containerd_config_path: the input must be the text of %s and hosts_dir a non-empty "
                                 "path, got %s and %r" % (name, type(config_text).__name__, hosts_dir))
    try:
        doc = tomlkit.parse(config_text)
    except TOMLKitError as e:
        raise AnsibleFilterError("%s is not valid TOML (%s); containerd cannot read it either. Fix the file, or replace "
                                 "it with the output of 'containerd config default', then run again" % (name, e))
    version = config_version(name, doc)
    keys = parse_table(name, table) if table else REGISTRY_TABLES[version or 2]

    node = doc
    for depth, key in enumerate(keys):
        child = node.get(key)
        if child is None:
            break
        if not isinstance(child, dict):
            raise AnsibleFilterError("%s sets %s to a %s, not a table; containerd cannot read it either. Fix the file, "
                                     "then run again" % (name, dotted(keys[:depth + 1]), type(child).__name__))
        node = child
    else:
        legacy = [k for k in ("mirrors", "configs") if node.get(k)]
        if legacy:
            raise AnsibleFilterError(
                "%s configures registries under [%s.mirrors] or .configs (%s); containerd refuses those together with "
                "config_path. Move them to hosts.toml files (the image_mirror role writes them) and remove them from "
                "config.toml" % (name, dotted(keys), ", ".join("%s: %s" % (k, ", ".join(node[k])) for k in legacy)))
        if node.get("config_path") == hosts_dir:
            return config_text

    if version is None:
        # empty, or comments only: a version 2 file, which containerd 1.6, 1.7 and 2.x all read
        if not config_text.strip():
            doc = tomlkit.parse(NEW_FILE_HEADER)
        doc.add("version", 2)
    node = doc
    for key in keys[:-1]:
        if key not in node:
            node.append(key, tomlkit.table(is_super_table=True))  # implicit: only its sub-tables get headers
        node = node[key]
    if keys[-1] in node:
        node[keys[-1]]["config_path"] = hosts_dir
    else:
        registry = tomlkit.table()
        registry.add("config_path", hosts_dir)
        registry.add(tomlkit.nl())
        node.append(keys[-1], registry)
    return tomlkit.dumps(doc)


class FilterModule(object):
    """llmops.onprem containerd configuration filters."""

    def filters(self):
        return {"containerd_config_path": containerd_config_path}
