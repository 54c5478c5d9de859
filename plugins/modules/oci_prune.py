#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: oci_prune
short_description: Remove from the site registry the images an earlier bundle pushed and the current one no longer names
version_added: 0.1.0
description:
  - The upgrade's clean-up of the site registry (docs/lifecycle.md, "Upgrade"). O(images) are the images an earlier push
    put there (C(llmops_site.image_mirror.pushed) of that run, each C(<registry>/<repository>:<tag>@<digest>)), O(keep)
    the images of the current bundle. Each manifest of O(images) that O(keep) does not name is deleted by its digest
    (C(DELETE /v2/<repository>/manifests/<digest>)), with the tags that point at it; for an index, its child manifests
    that no kept image uses go too.
  - Nothing the collection did not push is removed. A manifest that a tag outside O(images) and O(keep) points at (a
    tag someone else pushed) is kept and named in RV(kept), and so is every manifest an image of O(keep) uses, even
    when an old reference named the same digest.
  - The registry frees the blobs only when its garbage collection runs afterwards (C(docker-registry garbage-collect);
    the registry role's C(storage.delete.enabled) allows the deletes).
  - Check mode lists what would go and deletes nothing; a second run finds nothing to remove.
options:
  registry:
    description: The site registry, C(host:port) (as in O(images)); every reference must be on it.
    type: str
    required: true
  images:
    description: The images to remove, each C(<registry>/<repository>:<tag>@<digest>) (a digest is required).
    type: list
    elements: str
    required: true
  keep:
    description: The images to keep (the current bundle's, with their digests), in the same form.
    type: list
    elements: str
    default: []
  username:
    description: A registry user allowed to delete (the push user).
    type: str
  password:
    description: Its password.
    type: str
  ca_path:
    description: CA bundle (PEM) that signed the registry's certificate; the site CA.
    type: path
  validate_certs:
    description: Verify the registry's certificate. Leave on.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for the registry on one request.
    type: int
    default: 60
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Remove what the previous bundle pushed and this one no longer names
  llmops.onprem.oci_prune:
    registry: "{{ llmops_site.registry.registry_host }}"
    images: "{{ previous_images }}"
    keep: "{{ llmops_site.image_mirror.pushed }}"
    username: llmops-push
    password: "{{ lookup('ansible.builtin.file', llmops_site.registry.push_password_file) }}"
    ca_path: "{{ llmops_site.pki.ca_file }}"
  delegate_to: localhost
"""

RETURN = r"""
removed:
  description: The manifests deleted (in check mode, that would be), C(<repository>@<digest>), parents before children.
  returned: always
  type: list
  elements: str
kept:
  description: Manifests of O(images) left in place, each with the reason.
  returned: always
  type: list
  elements: dict
  sample:
    - manifest: public.ecr.aws/b2z8n5q1/vllm@sha256:4b825dc642cb6eb9a060e54bf8d69288fbee4904b825dc642cb6eb9a060e54bf
      why: "an image of keep uses it"
absent:
  description: Manifests of O(images) the registry no longer has (removed earlier).
  returned: always
  type: list
  elements: str
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
from ansible_collections.llmops.onprem.plugins.module_utils._oci import (
    INDEX_TYPES, Registry, check_site_registry, parse_reference)


def argument_spec():
    return dict(
        registry=dict(type="str", required=True),
        images=dict(type="list", elements="str", required=True),
        keep=dict(type="list", elements="str", default=[]),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        ca_path=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="int", default=60),
    )


def _refs(values, site, what):
    """(repository, tag, digest) of each reference, which must be on the site registry and carry a digest."""
    host = site.split("/", 1)[0]
    out = []
    for ref in values:
        p = parse_reference(ref)
        if p["registry"] != host:
            raise OnpremError("%s names %s, which is not in the site registry %s: nothing was removed" % (what, ref, host),
                              kind="input")
        if not p["digest"]:
            raise OnpremError("%s names %s without a digest (<registry>/<repository>:<tag>@sha256:...): nothing was "
                              "removed" % (what, ref), kind="input")
        out.append((p["repository"], p["tag"], p["digest"]))
    return out


def _children(reg, repository, digest):
    """The media type of a manifest and its child manifest digests (an index's), or None when it is gone."""
    got = reg.get_manifest(repository, digest)
    if got is None:
        return None
    media_type, data = got
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise OnpremError("%s@%s in %s is not JSON: refused" % (repository, digest, reg.host), kind="protocol")
    media_type = doc.get("mediaType") or media_type
    if media_type in INDEX_TYPES:
        return [m.get("digest") for m in doc.get("manifests") or [] if isinstance(m, dict) and m.get("digest")]
    return []


def run(p, check_mode):
    site = check_site_registry(p["registry"])
    old = _refs(p["images"], site, "images")
    keep = _refs(p["keep"], site, "keep")
    kept_pairs = set((repo, digest) for repo, _t, digest in keep)
    candidates = sorted(set((repo, digest) for repo, _t, digest in old) - kept_pairs)
    result = dict(changed=False, removed=[], kept=[], absent=[])
    for repo, _t, digest in old:
        if (repo, digest) in kept_pairs:
            result["kept"].append(dict(manifest="%s@%s" % (repo, digest), why="an image of keep uses it"))
    if not candidates:
        return result
    reg = Registry(site, p["username"], p["password"], p["ca_path"], p["validate_certs"], timeout=p["timeout"])
    repos = sorted(set(repo for repo, _d in candidates))
    reg.login(repos)
    # What the kept images of these repositories use: their own manifests and, for an index, its children.
    for repo, _t, digest in keep:
        if repo in repos:
            for child in _children(reg, repo, digest) or []:
                kept_pairs.add((repo, child))
    # The tags the collection named (old and kept); any other tag pointing at a candidate keeps it.
    ours = set((repo, tag) for repo, tag, _d in old + keep if tag)
    foreign = {}
    for repo in repos:
        for tag in reg.tags(repo):
            if (repo, tag) not in ours:
                digest = reg.manifest_digest(repo, tag)
                if digest:
                    foreign.setdefault((repo, digest), []).append(tag)
    for repo, digest in candidates:
        name = "%s@%s" % (repo, digest)
        if (repo, digest) in kept_pairs:
            result["kept"].append(dict(manifest=name, why="an image of keep uses it"))
            continue
        if (repo, digest) in foreign:
            result["kept"].append(dict(manifest=name, why="tag(s) %s, which this collection did not push, point at it"
                                       % ", ".join(sorted(foreign[(repo, digest)]))))
            continue
        children = _children(reg, repo, digest)
        if children is None:
            result["absent"].append(name)
            continue
        doomed = [digest] + [c for c in children if (repo, c) not in kept_pairs and (repo, c) not in foreign]
        for d in doomed:
            if check_mode or reg.delete_manifest(repo, d):
                result["removed"].append("%s@%s" % (repo, d))
            elif d == digest:
                result["absent"].append(name)  # gone since it was read
    result["changed"] = bool(result["removed"])
    reg.close()
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = run(module.params, module.check_mode)
    except OnpremError as e:
        module.fail_json(msg="oci_prune: %s" % e, **e.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
