#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bundle_images
short_description: Put container images into the bundle's single OCI image layout, pinned to digests
version_added: 0.1.0
description:
  - Copies each image with C(skopeo copy) into one OCI image layout (C(images/) of the bundle). All images share
    the layout's C(blobs/), so a layer used by ten images is stored once.
  - Each image is named in C(index.json) by its full upstream reference (C(org.opencontainers.image.ref.name)),
    which is what M(llmops.onprem.oci_mirror) and the C(llmops.onprem.site_image) filter map to the site registry.
  - References are resolved at build time; the digest each one got in the layout is returned (and recorded by
    M(llmops.onprem.bundle_seal) in the manifest), so the site installs exactly what was built.
  - C(latest) and untagged references are refused unless pinned by digest.
  - Idempotent. C(images/sources.json) records each reference's source digest; an image whose source still has
    that digest and whose blobs are all in the layout is not copied again.
  - The layout holds exactly the images given. Entries for images no longer listed, and the unnamed entries skopeo
    leaves behind when a reference moves to a new digest, are removed together with the blobs no remaining image uses.
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: full
options:
  layout:
    description: The OCI layout directory (created when missing).
    type: path
    required: true
  images:
    description: The images.
    type: list
    elements: dict
    required: true
    suboptions:
      ref:
        description: Full upstream reference, e.g. C(public.ecr.aws/b2z8n5q1/vllm:v0.6.3) or C(...@sha256:...).
        type: str
        required: true
      source:
        description:
          - Where skopeo reads the image, as a skopeo transport (C(docker://...), C(oci-archive:/path.tar),
            C(docker-archive:...), C(oci:/dir:name)). Default C(docker://<ref>).
        type: str
  skopeo:
    description: The skopeo binary.
    type: path
    default: skopeo
requirements:
  - skopeo
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Images into the bundle
  llmops.onprem.bundle_images:
    layout: /srv/bundles/site-a/images
    images:
      - ref: public.ecr.aws/b2z8n5q1/vllm:v0.6.3
      - ref: localhost/llmops/model-pull:0.1.0
        source: oci-archive:/build/model-pull.tar
"""

RETURN = r"""
images:
  description: Every image with the digest of its manifest in the layout and the digest of its source.
  returned: always
  type: list
  elements: dict
  sample: [{ref: docker.io/library/busybox:1.36, digest: "sha256:4627...", source_digest: "sha256:4627..."}]
copied:
  description: References copied (or, in check mode, that would be copied).
  returned: always
  type: list
  elements: str
removed:
  description: Layout entries that are no longer images of the spec (or unnamed leftovers), removed with their unused blobs.
  returned: always
  type: list
  elements: str
blobs_removed:
  description: Blobs no remaining image uses, deleted from the layout.
  returned: always
  type: int
"""

import hashlib
import json
import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
from ansible_collections.llmops.onprem.plugins.module_utils._files import write_atomic

REF_NAME = "org.opencontainers.image.ref.name"


class ImageError(OnpremError):
    KIND = "refused"


def ref_problem(ref):
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if "@sha256:" in ref:
        return None
    if ":" not in last:
        return "%s has no tag: pin it with a tag (not latest) or a digest" % ref
    if last.endswith(":latest"):
        return "%s uses the tag latest, which changes under you: pin a version tag or a digest" % ref
    if not re.match(r"^[a-z0-9.-]+(:[0-9]+)?/", name):
        return "%s lacks its registry: write the full reference (docker.io/library/nginx:1.25, not nginx:1.25)" % ref
    return None


def read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def layout_digests(layout):
    index = read_json(os.path.join(layout, "index.json"), {"manifests": []})
    return dict((m["annotations"][REF_NAME], m["digest"]) for m in index.get("manifests", [])
                if m.get("annotations", {}).get(REF_NAME))


def reachable(layout, digest, out):
    """Add digest and every blob its manifest (or index) names to out."""
    out.add(digest)
    path = os.path.join(layout, "blobs", *digest.split(":", 1))
    try:
        with open(path, "rb") as f:
            m = json.loads(f.read().decode())
    except (OSError, ValueError):
        return out
    for r in [m.get("config", {})] + m.get("layers", []) + m.get("manifests", []):
        if not r.get("digest"):
            continue
        if r.get("mediaType", "").endswith(("manifest.v1+json", "manifest.v2+json", "index.v1+json", "list.v2+json")):
            reachable(layout, r["digest"], out)
        else:
            out.add(r["digest"])
    return out


def prune(layout, keep_refs):
    """Drop index entries that are not images of the spec (images removed from the spec, and the
    unnamed entries skopeo leaves when a reference moves to a new digest), then every blob no
    remaining image uses, so the bundle carries exactly the spec's images. Returns what went."""
    index_path = os.path.join(layout, "index.json")
    index = read_json(index_path, None)
    if index is None:
        return [], []
    keep = [m for m in index.get("manifests", []) if m.get("annotations", {}).get(REF_NAME) in keep_refs]
    dropped = sorted(m.get("annotations", {}).get(REF_NAME) or m["digest"] for m in index["manifests"] if m not in keep)
    used = set()
    for m in keep:
        reachable(layout, m["digest"], used)
    blobs_dir = os.path.join(layout, "blobs", "sha256")
    gone = sorted("sha256:" + b for b in (os.listdir(blobs_dir) if os.path.isdir(blobs_dir) else []) if "sha256:" + b not in used)
    return dropped, gone


def apply_prune(layout, keep_refs, gone):
    index_path = os.path.join(layout, "index.json")
    index = read_json(index_path, {"manifests": []})
    index["manifests"] = [m for m in index.get("manifests", []) if m.get("annotations", {}).get(REF_NAME) in keep_refs]
    write_atomic(index_path, json.dumps(index, separators=(",", ":")).encode())
    for d in gone:
        os.unlink(os.path.join(layout, "blobs", *d.split(":", 1)))


def blobs_present(layout, digest):
    """The manifest blob and every blob it names exist in the layout."""
    return all(os.path.exists(os.path.join(layout, "blobs", *d.split(":", 1))) for d in reachable(layout, digest, set()))


def run(module, p):
    layout = p["layout"]
    problems = [x for x in (ref_problem(i["ref"]) for i in p["images"]) if x]
    if problems:
        raise ImageError("; ".join(problems))
    sources_path = os.path.join(layout, "sources.json")
    sources = read_json(sources_path, {})
    before = layout_digests(layout)
    copied, out = [], []
    for img in p["images"]:
        ref, source = img["ref"], img.get("source") or "docker://" + img["ref"]
        rc, raw, err = module.run_command([p["skopeo"], "inspect", "--raw", source], binary_data=True)
        if rc != 0:
            raise ImageError("cannot read %s from %s: %s" % (ref, source, (err or b"").decode("utf-8", "replace").strip()))
        src_digest = "sha256:" + hashlib.sha256(raw if isinstance(raw, bytes) else raw.encode()).hexdigest()
        rec = sources.get(ref, {})
        have = before.get(ref)
        if have and rec.get("source_digest") == src_digest and rec.get("digest") == have and blobs_present(layout, have):
            out.append(dict(ref=ref, digest=have, source_digest=src_digest))
            continue
        copied.append(ref)
        if module.check_mode:
            out.append(dict(ref=ref, digest=None, source_digest=src_digest))
            continue
        os.makedirs(layout, exist_ok=True)
        rc, dummy, err = module.run_command([p["skopeo"], "copy", "--quiet", source, "oci:%s:%s" % (layout, ref)])
        if rc != 0:
            raise ImageError("skopeo could not copy %s from %s: %s" % (ref, source, err.strip()))
        digest = layout_digests(layout).get(ref)
        sources[ref] = dict(source=source, source_digest=src_digest, digest=digest)
        out.append(dict(ref=ref, digest=digest, source_digest=src_digest))
    keep_refs = set(i["ref"] for i in p["images"])
    dropped, gone = prune(layout, keep_refs) if not copied or not module.check_mode else ([], [])
    if gone or dropped:
        if not module.check_mode:
            apply_prune(layout, keep_refs, gone)
        for ref in [d for d in dropped if d in sources]:
            sources.pop(ref)
    if (copied or dropped) and not module.check_mode:
        write_atomic(sources_path, json.dumps(sources, indent=1, sort_keys=True).encode() + b"\n")
    after = dict(before)
    after.update((i["ref"], i["digest"] or "(to be copied)") for i in out)
    for d in dropped:
        after.pop(d, None)
    return dict(changed=bool(copied or dropped or gone), copied=copied, removed=dropped, blobs_removed=len(gone), images=out,
                diff=dict(before="\n".join("%s %s" % kv for kv in sorted(before.items())) + "\n",
                          after="\n".join("%s %s" % kv for kv in sorted(after.items())) + "\n"))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            layout=dict(type="path", required=True),
            images=dict(type="list", elements="dict", required=True, options=dict(
                ref=dict(type="str", required=True),
                source=dict(type="str"),
            )),
            skopeo=dict(type="path", default="skopeo"),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module, module.params)
    except ImageError as e:
        module.fail_json(msg=str(e))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
