#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: oci_mirror
short_description: Push the images of an OCI image layout into the site registry
version_added: 0.1.0
description:
  - Pushes every image (or the ones named in O(images)) of an OCI image layout directory into a registry,
    speaking the registry HTTP API v2 directly.
  - Each image is named in the layout's C(index.json) by its full upstream reference
    (annotation C(org.opencontainers.image.ref.name), for example C(public.ecr.aws/b2z8n5q1/vllm:v0.6.3)).
    It lands in the registry under the name the P(llmops.onprem.site_image#filter) filter gives it,
    C(<registry>/<upstream registry>/<repository>:<tag>), so that node mirrors and rendered values agree.
  - An image whose tag already points at the same manifest digest is left alone. Otherwise blobs the
    repository already has are skipped (C(HEAD)), blobs another repository of the registry has are mounted
    (no bytes move), and the rest are uploaded, each blob once, in parallel (O(parallel)), in chunks of
    O(chunk_size) MiB. Manifests go last; each pushed tag is then read back and its digest compared.
  - Every blob to upload is checked against its sha256 before anything is pushed; a corrupt blob stops the
    run with its digest named and nothing pushed.
  - Resume. After each chunk the registry accepted, the upload location and offset are kept in O(state_dir).
    A run that was interrupted (SIGTERM, SIGINT or SIGHUP let the chunk in flight finish first) resumes each
    unfinished blob at the offset the registry reports. The registry drops an upload that was cut in the
    middle of a chunk (SIGKILL, a broken connection) or that it no longer knows (a registry restart without a
    fixed C(http.secret)); such a blob starts again from zero, and the result lists it in RV(restarted).
    A resume record whose location is not on the registry's own origin is ignored (the blob starts again).
  - Credentials (Basic, or the bearer token from the registry's token service) are sent only to the registry's
    own origin (C(https://<registry host>:<port>)). A C(Location) header on another host is refused with a
    message, and nothing is sent there. The token service's answer is read up to 64 KiB; an answer without a
    token fails with what came back.
  - Check mode reads the registry (without writing) when it answers. When nothing answers at O(registry) yet
    (a first C(--check) run, before the registry stage made it), check mode does not log in anywhere and
    predicts from the layout alone - every image pushed - and says so (RV(registry_checked) is false).
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: full
options:
  layout:
    description: OCI image layout directory (C(oci-layout), C(index.json), C(blobs/sha256/)). Read only.
    type: path
    required: true
  registry:
    description:
      - The site registry, C(host[:port]) without a scheme (the same value given to the site_image filter).
      - Always HTTPS.
    type: str
    required: true
  images:
    description:
      - Upstream references of the images to push, as named in the layout. Short docker.io names are
        normalised (C(nginx:1.25) is C(docker.io/library/nginx:1.25)).
      - Empty pushes every named image of the layout.
    type: list
    elements: str
    default: []
  username:
    description: Registry user allowed to push.
    type: str
  password:
    description: Its password.
    type: str
  ca_path:
    description: CA bundle (PEM) that signed the registry's certificate; the site CA. Without it the system store is used.
    type: path
  validate_certs:
    description: Verify the registry's certificate. Leave on.
    type: bool
    default: true
  parallel:
    description: Blob uploads (and lookups) running at once.
    type: int
    default: 4
  chunk_size:
    description:
      - Size of one upload request in MiB. A resumed upload restarts at the last chunk boundary the registry confirmed.
    type: int
    default: 128
  state_dir:
    description:
      - Directory for the resume records (one small 0600 JSON file per unfinished blob). Created when needed.
      - Default C(~/.cache/llmops-onprem/oci_mirror) of the user running the module; the layout itself may be read only.
    type: path
  progress_file:
    description:
      - A file that holds the transfer's progress while it runs, in the collection's one progress format (JSON with
        stage, bytes and files done and total, rate, ETA and state; see C(docs/progress.md)), replaced atomically at
        most twice a second and once at the end.
      - The P(llmops.onprem.progress#callback) callback shows it live in C(ansible-playbook)'s output.
    type: path
  timeout:
    description: Seconds to wait for the registry on one request.
    type: int
    default: 300
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Mirror the bundle's images into the site registry
  llmops.onprem.oci_mirror:
    layout: "{{ llmops_bundle }}/images"
    registry: "{{ registry_connection.registry_host }}"
    username: "{{ registry_connection.push_user }}"
    password: "{{ lookup('ansible.builtin.file', registry_connection.push_password_file) }}"
    ca_path: "{{ registry_connection.ca_file }}"
    progress_file: /var/tmp/llmops-oci-mirror.progress.json
  delegate_to: localhost

- name: Push only the vLLM image
  llmops.onprem.oci_mirror:
    layout: /media/usb/bundle/images
    registry: registry.site.example:5000
    images: [public.ecr.aws/b2z8n5q1/vllm:v0.6.3]
    username: llmops-push
    password: "{{ vault_registry_push_password }}"
    ca_path: /etc/llmops/ca.crt
"""

RETURN = r"""
images:
  description: Every selected image, its name in the registry, its manifest digest and what the run did.
  returned: always
  type: list
  elements: dict
  sample:
    - source: public.ecr.aws/b2z8n5q1/vllm:v0.6.3
      target: registry.site.example:5000/public.ecr.aws/b2z8n5q1/vllm:v0.6.3
      digest: sha256:4b825dc642cb6eb9a060e54bf8d69288fbee4904b825dc642cb6eb9a060e54bf
      action: push
      bytes: 12884901888
bytes_total:
  description: Bytes the run had to move (in check mode, would move) for blobs the registry lacked.
  returned: always
  type: int
  sample: 12884901888
bytes_moved:
  description: Bytes actually sent. Less than RV(bytes_total) when uploads resumed; 0 in check mode.
  returned: always
  type: int
  sample: 9663676416
blobs_uploaded:
  description: Blobs uploaded (or, in check mode, to upload).
  returned: always
  type: int
  sample: 3
blobs_mounted:
  description: Blobs mounted from another repository of the registry (or to mount).
  returned: always
  type: int
  sample: 2
blobs_present:
  description: Blobs of changed images that their repository already had.
  returned: always
  type: int
  sample: 7
resumed:
  description: Blobs whose upload resumed, with the offset the registry confirmed.
  returned: always
  type: list
  elements: dict
  sample: [{digest: "sha256:0f1e...", repository: public.ecr.aws/b2z8n5q1/vllm, offset: 4294967296}]
restarted:
  description: Blobs with a resume record that the registry no longer knew; they were uploaded from zero.
  returned: always
  type: list
  elements: str
  sample: []
registry_checked:
  description: False when check mode found no registry answering at O(registry) (not created yet) and predicted
    from the bundle alone, without logging in; true otherwise.
  returned: always
  type: bool
  sample: true
seconds:
  description: Wall time of the run.
  returned: always
  type: float
  sample: 41.7
"""

import os
import pwd
import signal
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils import _retry
from ansible_collections.llmops.onprem.plugins.module_utils._oci import (
    Layout, OnpremError, Registry, UploadState, check_site_registry, format_reference, normalize_reference,
    parse_reference, site_repository, upload_blob)
from ansible_collections.llmops.onprem.plugins.module_utils._progress import ProgressWriter


def argument_spec():
    return dict(
        layout=dict(type="path", required=True),
        registry=dict(type="str", required=True),
        images=dict(type="list", elements="str", default=[]),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        ca_path=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
        parallel=dict(type="int", default=4),
        chunk_size=dict(type="int", default=128),
        state_dir=dict(type="path"),
        progress_file=dict(type="path"),
        timeout=dict(type="int", default=300),
    )


def select_images(layout, wanted):
    """[(normalised source reference, index descriptor)] in a stable order."""
    named = layout.images()
    if not named:
        raise OnpremError("the layout %s names no image (no org.opencontainers.image.ref.name annotation in "
                          "index.json)" % layout.path, kind="input")
    if not wanted:
        return sorted(named.items())
    out, missing = [], []
    for ref in wanted:
        key = normalize_reference(ref)
        if key in named:
            out.append((key, named[key]))
        else:
            missing.append(ref)
    if missing:
        raise OnpremError("image(s) not in the layout %s: %s (it holds: %s)" % (
            layout.path, ", ".join(missing), ", ".join(sorted(named))), kind="input")
    return sorted(dict(out).items())


def describe(layout, selected, site):
    """Pure but for reading the layout's manifests: what each image means for the registry."""
    out = []
    for source, desc in selected:
        p = parse_reference(source)
        repo = site_repository(p)
        if site.count("/"):
            repo = site.split("/", 1)[1] + "/" + repo
        contents = layout.image(source, desc)
        tag = p["tag"] or (None if p["digest"] else "latest")
        out.append(dict(source=source, repository=repo, tag=tag, ref_digest=p["digest"],
                        digest=desc["digest"], manifests=contents["manifests"], blobs=contents["blobs"],
                        target=format_reference(site.split("/", 1)[0], repo, tag, p["digest"])))
    return out


def plan(images, current, present):
    """Pure: what to do, given the registry's state.

    images: from describe(); current: {repository:tag-or-digest: digest or None};
    present: {(repository, digest): bool} for the blobs of the images to push.
    """
    uploads, mounts, holders = {}, [], {}
    for img in images:
        if current.get(img["target"]) == img["digest"]:
            for d in img["blobs"]:
                holders.setdefault(d, img["repository"])
    todo = [img for img in images if current.get(img["target"]) != img["digest"]]
    n_present = 0
    for img in todo:
        for d in img["blobs"]:
            if present.get((img["repository"], d)):
                holders.setdefault(d, img["repository"])
    for img in todo:
        for d, size in sorted(img["blobs"].items()):
            if present.get((img["repository"], d)):
                n_present += 1
            elif d in holders:
                mounts.append(dict(repository=img["repository"], digest=d, source=holders[d], size=size))
            elif d in uploads:
                mounts.append(dict(repository=img["repository"], digest=d, source=uploads[d]["repository"], size=size))
            else:
                uploads[d] = dict(repository=img["repository"], digest=d, size=size, source=img["source"])
    return dict(todo=todo, uploads=[uploads[d] for d in sorted(uploads)], mounts=mounts, present=n_present,
                bytes_total=sum(u["size"] for u in uploads.values()))


def _pool_map(parallel, fn, items, stop=None):
    """fn over items, at most ``parallel`` at once. On the first failure ``stop`` is set (uploads end at their
    next chunk boundary) and the first error that is not a consequence of stopping is raised."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as ex:
        futures = [ex.submit(fn, it) for it in items]
        wait(futures, return_when=FIRST_EXCEPTION)
        if stop is not None and any(f.done() and f.exception() for f in futures):
            stop.set()
        wait(futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        real = [e for e in errors if getattr(e, "kind", None) != "interrupted"]
        raise (real or errors)[0]
    return [f.result() for f in futures]


def gather(p, check_mode):
    """Everything plan() reads, nothing written: the inputs checked, the selected images of the layout, and the
    registry's state of them (each tag's manifest digest, whether each blob of a changed image is in its repository).
    When check mode finds no registry answering yet (a first --check run, before the registry stage made it), the
    state is predicted from the bundle alone (nothing there), without logging in anywhere.
    Returns dict(site, layout, images, registry, current, present, reachable)."""
    site = check_site_registry(p["registry"])
    if p["parallel"] < 1 or p["chunk_size"] < 1:
        raise OnpremError("parallel (%d) and chunk_size (%d MiB) must be at least 1" % (p["parallel"], p["chunk_size"]),
                          kind="input")
    layout = Layout(p["layout"])
    images = describe(layout, select_images(layout, p["images"]), site)
    reg = Registry(site, p["username"], p["password"], p["ca_path"], p["validate_certs"], timeout=p["timeout"])
    if check_mode and not reg.answers():
        return dict(site=site, layout=layout, images=images, registry=reg, reachable=False,
                    current=dict((i["target"], None) for i in images), present={})
    reg.login([img["repository"] for img in images])
    current = dict(zip([i["target"] for i in images], _pool_map(p["parallel"], lambda i: head_manifest(reg, i), images)))
    pairs = sorted(set((img["repository"], d) for img in images if current[img["target"]] != img["digest"]
                       for d in img["blobs"]))
    present = dict(zip(pairs, _pool_map(p["parallel"], lambda rd: reg.blob_exists(*rd), pairs)))
    return dict(site=site, layout=layout, images=images, registry=reg, reachable=True, current=current, present=present)


def head_manifest(reg, img):
    return reg.manifest_digest(img["repository"], img["ref_digest"] or img["tag"])


def report(images, current, pl, reachable, site):
    """Pure: the module's result for plan() ``pl`` before anything is pushed (what check mode returns, and what a real
    run starts from: bytes_moved, resumed and restarted then fill in as the push goes)."""
    result = dict(
        changed=bool(pl["todo"]),
        images=[dict(source=i["source"], target=i["target"], digest=i["digest"],
                     action="push" if i in pl["todo"] else "none",
                     bytes=sum(u["size"] for u in pl["uploads"] if u["source"] == i["source"])) for i in images],
        bytes_total=pl["bytes_total"], bytes_moved=0, blobs_uploaded=len(pl["uploads"]),
        blobs_mounted=len(pl["mounts"]), blobs_present=pl["present"], resumed=[], restarted=[],
        registry_checked=reachable,
        diff=dict(before=dict(images=sorted(i["target"] for i in images if current[i["target"]] == i["digest"])),
                  after=dict(images=sorted(i["target"] for i in images))))
    if not reachable:
        result["msg"] = ("check mode: the registry %s does not answer yet, so the prediction comes from the bundle "
                         "alone (every image pushed); a real run needs the registry" % site)
    return result


def run(p, check_mode, stop=None):
    """gather(), plan(), report(); check mode (or nothing to push) stops there, a real run then apply()s the plan."""
    t0 = time.time()
    stop = stop or threading.Event()
    g = gather(p, check_mode)
    pl = plan(g["images"], g["current"], g["present"])
    result = report(g["images"], g["current"], pl, g["reachable"], g["site"])
    if not check_mode and pl["todo"]:
        apply(p, pl, g["images"], g["layout"], g["registry"], stop, result)
    result["seconds"] = round(time.time() - t0, 2)
    return result


def apply(p, pl, images, layout, reg, stop, result):
    """Carry out plan() ``pl``: every blob to upload checked against its digest before anything is pushed, then
    uploads, mounts, manifests and their read-back (_push_and_put), with the progress file; fills result's
    bytes_moved, resumed and restarted."""
    by_digest = dict((d, s) for img in images for d, s in img["blobs"].items())
    _pool_map(p["parallel"], lambda u: layout.verify_blob(u["digest"], by_digest[u["digest"]]), pl["uploads"])

    state = UploadState(p["state_dir"] or os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".cache", "llmops-onprem", "oci_mirror"))
    progress = ProgressWriter(p["progress_file"], "image_mirror", "%s -> %s" % (p["layout"], reg.host), phase="upload",
                              bytes_total=pl["bytes_total"], files_total=len(pl["uploads"]))
    with progress:
        _push_and_put(p, pl, images, layout, reg, state, stop, progress, result, lambda img: head_manifest(reg, img))
    reg.close()


def push_blob(reg, state, u, path, chunk_size, stop, on_bytes, upload=upload_blob, tries=None):
    """upload_blob, tried once more after a transport hiccup part-way, resuming from the offset the registry
    acknowledged (module_utils/_retry.py): only when the failed try recorded progress, so the POST that opens an
    upload session is never sent twice for one failure. Returns upload_blob's (bytes sent, resumed-from offset)."""
    tries = _retry.Retry("PUT", 2) if tries is None else tries
    while True:
        before = state.load(reg.host, u["repository"], u["digest"])
        try:
            return upload(reg, state, u["repository"], u["digest"], u["size"], path, chunk_size, stop, on_bytes)
        except OnpremError as e:
            after = state.load(reg.host, u["repository"], u["digest"])
            if after is None or after == before or not tries.again(exc=e):
                raise


def _push_and_put(p, pl, images, layout, reg, state, stop, progress, result, head_manifest):
    """The pushing half of apply(): upload, mount, manifests, read-back; the progress file follows it."""
    lock = threading.Lock()

    def push(u):
        rec = state.load(reg.host, u["repository"], u["digest"])
        sent, resumed = push_blob(reg, state, u, layout.blob_path(u["digest"]), p["chunk_size"] << 20, stop, progress.add)
        with lock:
            result["bytes_moved"] += sent
            if resumed is not None:
                result["resumed"].append(dict(digest=u["digest"], repository=u["repository"], offset=resumed))
            elif rec is not None:
                result["restarted"].append(u["digest"])
        progress.file_done()

    _pool_map(p["parallel"], push, pl["uploads"], stop)
    progress.set_phase("mount")

    def mount(m):
        if not reg.mount(m["repository"], m["digest"], m["source"]):
            # The registry would not mount it: upload it into this repository instead.
            sent, _r = upload_blob(reg, state, m["repository"], m["digest"], m["size"],
                                   layout.blob_path(m["digest"]), p["chunk_size"] << 20, stop, progress.add)
            with lock:
                result["bytes_moved"] += sent
    _pool_map(p["parallel"], mount, pl["mounts"], stop)

    progress.set_phase("manifests")
    for img in pl["todo"]:
        for m in img["manifests"][:-1]:
            reg.put_manifest(img["repository"], m["digest"], m["media_type"], m["data"])
        top = img["manifests"][-1]
        reg.put_manifest(img["repository"], img["ref_digest"] or img["tag"], top["media_type"], top["data"])
    for img in pl["todo"]:
        got = head_manifest(img)
        if got != img["digest"]:
            raise OnpremError("read-back of %s gave digest %s, expected %s: something else pushed to that tag, or the "
                              "registry rewrote the manifest" % (img["target"], got, img["digest"]), kind="protocol")
    progress.done()


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        try:
            result = run(module.params, module.check_mode, stop)
        except (IOError, OSError) as e:
            raise OnpremError("cannot read or write %s: %s" % (getattr(e, "filename", None) or "a file", e), kind="input")
    except OnpremError as e:
        module.fail_json(msg=str(e), **e.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
