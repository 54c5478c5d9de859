#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: checkpoint_sync
short_description: Make an S3 prefix hold exactly a local model checkpoint
version_added: 0.1.0
description:
  - Compares the local checkpoint with the objects under C(s3://bucket/prefix/) by sha256 and uploads only the files
    that differ, in parallel, with multipart uploads above O(part_size). Each object carries its sha256 in its metadata
    (C(x-amz-meta-sha256)); ETags are never used to compare (they are not content hashes for multipart objects).
  - With O(manifest), the local sha256 values come from the checkpoint manifest (the bundle carries one per model) and
    nothing local is hashed; only sizes are checked against the files. Without it every file is hashed first, and the
    result says so (RV(hashed_locally)).
  - Remote side - one listing of the prefix and of its open multipart uploads. When C(<prefix>/.llmops/manifest.json)
    holds exactly the bytes of the local manifest, every file is listed with the manifest's size and no upload is
    open, the prefix is complete (the manifest is written last) and nothing more is asked - a no-op re-sync costs
    three requests. Otherwise a HEAD per listed object of the checkpoint reads its sha256 metadata.
    A no-op re-sync moves no file bytes.
  - After the files, writes the checkpoint manifest to C(<prefix>/.llmops/manifest.json) (the in-cluster downloader
    reads it from there and checks its digest). It is written last, so a reader never sees a manifest whose files are
    not all in place. Objects under C(<prefix>/.llmops/) are never counted as extra.
  - Resume - an interrupted sync leaves complete objects (skipped next time by their sha256) and may leave open
    multipart uploads. Those open uploads under the prefix are aborted (their parts discarded) and their files uploaded
    again whole, so the unit of resume is a file. RV(aborted_uploads) lists them.
  - Objects under the prefix that are not in the checkpoint are listed in RV(extra) and deleted only with
    O(delete=true).
  - Check mode and diff report exactly the files the real run uploads and deletes.
  - The module runs where the task runs and needs boto3 there (the roles run it on the controller).
extends_documentation_fragment:
  - llmops.onprem.s3_endpoint
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: full
options:
  src:
    description:
      - The local checkpoint directory. Names starting with C(.) are not part of the checkpoint. A symbolic link that
        leaves it, dangles, or names a directory is refused before anything is read or uploaded.
    type: path
    required: true
  name:
    description:
      - Model name written into the manifest when the module builds it (no O(manifest)). Defaults to the basename of
        O(src). With O(manifest), the manifest's own name is used.
    type: str
  manifest:
    description:
      - Checkpoint manifest of O(src) (JSON, schema C(llmops.onprem/checkpoint-manifest/v1)). Its sha256 values are
        trusted (the bundle import verified them; M(llmops.onprem.checkpoint_verify) can check them again).
      - Every file of O(src) must be in it with the same size, and every file in it must exist.
    type: path
  bucket:
    description:
      - Bucket that holds the checkpoint. It must exist.
    type: str
    required: true
  prefix:
    description:
      - Key prefix (without leading or trailing C(/)) the checkpoint files go under.
    type: str
    required: true
  delete:
    description:
      - Delete objects under the prefix that are not part of the checkpoint.
    type: bool
    default: false
  copy_from:
    description:
      - Prefixes in the same bucket that hold an earlier version of this checkpoint (an upgrade's previous
        C(<model>/<manifest digest>)). A file to upload whose object under one of them has the same path, size and sha256
        metadata is copied inside the object store (server-side C(CopyObject), for a file of at most 5 GiB) instead
        of uploaded, so a new version that changes one shard uploads that shard only. Listed in RV(copied).
      - The copy is trusted as the uploads' skip is, by the source object's sha256 metadata; the in-cluster downloader
        checks every byte's sha256 against the manifest in any case.
    type: list
    elements: str
    default: []
  verify:
    description:
      - Read every object of the checkpoint back and compare the sha256 of its bytes with the manifest, not only the
        sha256 recorded in its metadata. Objects whose bytes differ (a store that corrupted them, an object replaced
        behind the collection's back) are uploaded again, listed in RV(corrupt), and read back once more after the
        upload; a file still wrong after that fails the run.
      - This is the repair for a serving pod whose downloader reported C(checkpoint_corrupt) (exit code 5); without
        it the sync trusts each object's sha256 metadata and cannot see such a fault.
      - Reads the whole checkpoint back; for a large model this takes as long as a download. Check mode reads it back
        too (read only) and predicts the re-uploads.
    type: bool
    default: false
  parallel:
    description:
      - Concurrent requests (uploads of parts and files, HEADs, read-back downloads).
    type: int
    default: 16
  part_size:
    description:
      - Multipart part size in MiB; files larger than this are uploaded in parts.
    type: int
    default: 64
  progress_file:
    description:
      - A file that holds the transfer's progress while it runs, in the collection's one progress format (JSON with
        stage, bytes and files done and total, rate, ETA and state; see C(docs/progress.md)), replaced atomically at
        most twice a second and once at the end.
      - The P(llmops.onprem.progress#callback) callback shows it live in C(ansible-playbook)'s output.
    type: path
requirements:
  - boto3 (with s3transfer) on the host that runs the module.
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Sync a checkpoint from the bundle into the object store
  llmops.onprem.checkpoint_sync:
    endpoint_url: "{{ minio_connection.endpoint_url }}"
    ca_path: "{{ minio_connection.ca_path }}"
    access_key: "{{ minio_connection.access_key }}"
    secret_key: "{{ minio_connection.secret_key }}"
    src: /media/usb/bundle/models/qwen2.5-0.5b-instruct
    manifest: /media/usb/bundle/models/qwen2.5-0.5b-instruct.manifest.json
    bucket: model-checkpoints
    prefix: qwen2.5-0.5b-instruct
    delete: true
    progress_file: /tmp/checkpoint-sync.progress.json
  delegate_to: localhost
"""

RETURN = r"""
bucket:
  description: The bucket.
  returned: always
  type: str
  sample: model-checkpoints
prefix:
  description: The prefix, without leading or trailing C(/).
  returned: always
  type: str
  sample: qwen2.5-0.5b-instruct/3b1d5f0e4c9f7e8d2a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f
uploaded:
  description: Files uploaded (in check mode, that would be uploaded), relative to the prefix.
  returned: always
  type: list
  elements: str
  sample: [model-00002-of-00002.safetensors]
copied:
  description: Files copied inside the object store from a prefix of O(copy_from) (in check mode, that would be).
  returned: always
  type: list
  elements: str
  sample: [model-00001-of-00002.safetensors, config.json]
bytes_copied:
  description: Bytes of RV(copied), copied server-side (none crossed the network).
  returned: always
  type: int
deleted:
  description: Objects deleted (in check mode, that would be deleted), relative to the prefix.
  returned: always
  type: list
  elements: str
  sample: [old-shard.safetensors]
extra:
  description: Objects under the prefix that are not part of the checkpoint (deleted only with O(delete=true)).
  returned: always
  type: list
  elements: str
  sample: [laguna_xs.tar]
skipped_files:
  description: Number of files already in place with the same sha256 and size.
  returned: always
  type: int
  sample: 9
aborted_uploads:
  description: Keys whose open multipart uploads (left by an interrupted sync) were aborted.
  returned: always
  type: list
  elements: str
  sample: [qwen/model-00001-of-00002.safetensors]
manifest_uploaded:
  description: Whether C(<prefix>/.llmops/manifest.json) was (or would be) written.
  returned: always
  type: bool
  sample: true
bytes_uploaded:
  description: File bytes uploaded (0 in check mode and for a no-op).
  returned: always
  type: int
  sample: 536870912
bytes_to_upload:
  description: File bytes the run uploads (what check mode predicts).
  returned: always
  type: int
  sample: 536870912
bytes_total:
  description: Size of the whole checkpoint.
  returned: always
  type: int
  sample: 988097824
files:
  description: Number of files in the checkpoint.
  returned: always
  type: int
  sample: 11
manifest_digest:
  description: Digest of the checkpoint manifest (sha256 of its canonical bytes); model-pull's C(--digest).
  returned: always
  type: str
  sample: 3b1d5f0e4c9f7e8d2a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f
hashed_locally:
  description: True when no manifest was given and every local file was hashed to build one.
  returned: always
  type: bool
  sample: false
corrupt:
  description: Files whose object bytes did not match the manifest when O(verify) read them back before the upload
    (they are re-uploaded; in check mode, they would be).
  returned: always
  type: list
  elements: str
  sample: [model-00001-of-00002.safetensors]
verified:
  description: True when O(verify) read every file back and all matched.
  returned: always
  type: bool
  sample: false
seconds:
  description: Wall time of the run.
  returned: always
  type: float
  sample: 12.5
log:
  description: One entry per uploaded file (path, bytes, action, seconds since the start).
  returned: always
  type: list
  elements: dict
  sample: [{path: model-00002-of-00002.safetensors, bytes: 536870912, action: uploaded, seconds: 3.2}]
"""

import hashlib
import os
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.llmops.onprem.plugins.module_utils._checkpoint import (
    MANIFEST_KEY, CheckpointError, build_manifest, canonical_bytes, hash_files, list_files, load_manifest,
    manifest_digest)
from ansible_collections.llmops.onprem.plugins.module_utils._checkpoint_s3 import (
    BOTO3_IMPORT_ERROR, COPY_LIMIT, HAS_BOTO3, Progress, Store)
from ansible_collections.llmops.onprem.plugins.module_utils._s3_endpoint import (
    OnpremError, bucket_name_problems, endpoint_argument_spec)


def argument_spec():
    spec = endpoint_argument_spec()
    spec.update(
        src=dict(type="path", required=True),
        name=dict(type="str"),
        manifest=dict(type="path"),
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", required=True),
        delete=dict(type="bool", default=False),
        copy_from=dict(type="list", elements="str", default=[]),
        verify=dict(type="bool", default=False),
        parallel=dict(type="int", default=16),
        part_size=dict(type="int", default=64),
        progress_file=dict(type="path"),
    )
    return spec


def local_manifest(p):
    """(manifest, hashed_locally) for the local checkpoint."""
    sizes = list_files(p["src"])
    if not p["manifest"]:
        name = p["name"] or os.path.basename(os.path.normpath(p["src"]))
        digests = hash_files(p["src"], sorted(sizes), workers=4)
        return build_manifest(name, [dict(path=k, size=v, sha256=digests[k]) for k, v in sizes.items()]), True
    manifest = load_manifest(p["manifest"])
    wanted = dict((f["path"], f["size"]) for f in manifest["files"])
    problems = []
    missing = sorted(set(wanted) - set(sizes))
    extra = sorted(set(sizes) - set(wanted))
    if missing:
        problems.append("in the manifest but not in %s: %s" % (p["src"], ", ".join(missing)))
    if extra:
        problems.append("in %s but not in the manifest: %s" % (p["src"], ", ".join(extra)))
    problems.extend("%s has %d bytes, the manifest says %d" % (k, sizes[k], wanted[k])
                    for k in sorted(set(wanted) & set(sizes)) if sizes[k] != wanted[k])
    if problems:
        raise CheckpointError("the manifest %s does not describe %s: %s" % (p["manifest"], p["src"], "; ".join(problems)),
                              problems)
    return manifest, False


def remote_state(store, manifest):
    """(remote objects {rel: {size, sha256}}, open uploads) under the prefix.

    Fast path, no HEAD at all: the remote manifest holds exactly the local manifest's bytes, the listing shows
    every file of it with its size, and no multipart upload is open under the prefix. checkpoint_sync writes the
    manifest last, only after every file was uploaded with that sha256, so the files' sha256 are the manifest's.
    Anything else (another manifest, a missing or resized file, an interrupted sync) reads each object's sha256
    metadata with a HEAD."""
    sizes = store.list()
    open_uploads = store.open_uploads()
    data = canonical_bytes(manifest)
    if (not open_uploads and sizes.get(MANIFEST_KEY) == len(data)
            and all(sizes.get(f["path"]) == f["size"] for f in manifest["files"])
            and store.get_bytes(MANIFEST_KEY) == data):
        remote = dict((r, dict(size=s, sha256="")) for r, s in sizes.items())
        remote.update((f["path"], dict(size=f["size"], sha256=f["sha256"])) for f in manifest["files"])
        remote[MANIFEST_KEY] = dict(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        return remote, open_uploads
    return store.describe([f["path"] for f in manifest["files"]] + [MANIFEST_KEY], sizes=sizes), open_uploads


def plan(manifest, remote, open_uploads, delete):
    """Pure: what to do, from the manifest, the remote objects ({rel: {size, sha256}}) and open uploads."""
    wanted = dict((f["path"], f) for f in manifest["files"])
    upload = [f for f in manifest["files"]
              if remote.get(f["path"]) != dict(size=f["size"], sha256=f["sha256"])]
    data = canonical_bytes(manifest)
    manifest_ok = remote.get(MANIFEST_KEY) == dict(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    extra = sorted(r for r in remote if r not in wanted and not r.startswith(".llmops/"))
    return dict(upload=upload, manifest=not manifest_ok, extra=extra,
                delete=extra if delete else [], abort=open_uploads)


def reupload(todo, manifest, corrupt):
    """Pure: the plan with the files whose object bytes were found corrupt added to the uploads."""
    if not corrupt:
        return todo
    bad = set(corrupt)
    upload = sorted(list(todo["upload"]) + [f for f in manifest["files"] if f["path"] in bad], key=lambda f: f["path"])
    return dict(todo, upload=upload)


def plan_copies(todo, sources):
    """Pure: (copies {source prefix: [file + source path]}, plan without those files) from the source prefixes'
    objects ({prefix: {rel: {size, sha256}}}, in the order given): a file to upload whose object under a source has the
    same path, size and sha256 is copied from the first such source."""
    copies, upload = {}, []
    for f in todo["upload"]:
        for prefix, objects in sources:
            if f["size"] <= COPY_LIMIT and objects.get(f["path"]) == dict(size=f["size"], sha256=f["sha256"]):
                copies.setdefault(prefix, []).append(dict(f, source=f["path"]))
                break
        else:
            upload.append(f)
    return copies, dict(todo, upload=upload)


def diff(manifest, remote, todo):
    before = dict((r, v["sha256"] or "(size %d, no sha256)" % v["size"]) for r, v in remote.items()
                  if not r.startswith(".llmops/"))
    after = dict((r, v) for r, v in before.items() if r not in todo["delete"])
    after.update((f["path"], f["sha256"]) for f in manifest["files"])
    return dict(before=dict(files=before), after=dict(files=after))


def run(p, check_mode, store_factory=Store):
    start = time.monotonic()
    problems = bucket_name_problems(p["bucket"])
    if problems:
        raise OnpremError("invalid bucket name %r: %s" % (p["bucket"], "; ".join(problems)), kind="input")
    if not p["prefix"].strip("/") or "//" in p["prefix"]:
        raise OnpremError("prefix %r must name a key prefix such as model/version (not empty, no '//')" % p["prefix"],
                          kind="input")
    if p["parallel"] < 1 or p["part_size"] < 5:
        raise OnpremError("parallel must be at least 1 and part_size at least 5 (MiB, the S3 minimum)", kind="input")
    manifest, hashed = local_manifest(p)
    digest = manifest_digest(manifest)
    store = store_factory(p["endpoint_url"], p["access_key"], p["secret_key"], p["region"], p.get("ca_path"),
                          p["timeout"], p["bucket"], p["prefix"], parallel=p["parallel"], part_size=p["part_size"] << 20)
    remote, open_uploads = remote_state(store, manifest)
    todo = plan(manifest, remote, open_uploads, p["delete"])
    corrupt = []
    if p["verify"]:
        # Objects the plan trusts by their sha256 metadata: read their bytes back (read only, also in check mode).
        pending = set(f["path"] for f in todo["upload"])
        corrupt = store.read_back([f for f in manifest["files"] if f["path"] not in pending])
        todo = reupload(todo, manifest, corrupt)
    copies = {}
    sources = [c.strip("/") for c in p.get("copy_from") or [] if c.strip("/") and c.strip("/") != p["prefix"].strip("/")]
    if sources and todo["upload"]:
        pending = [f["path"] for f in todo["upload"]]
        copies, todo = plan_copies(todo, [
            (src, store_factory(p["endpoint_url"], p["access_key"], p["secret_key"], p["region"], p.get("ca_path"),
                                p["timeout"], p["bucket"], src, parallel=p["parallel"]).describe(pending))
            for src in sources])
    copied = sorted(f["path"] for files in copies.values() for f in files)
    to_upload_bytes = sum(f["size"] for f in todo["upload"])
    changed = bool(todo["upload"] or copied or todo["manifest"] or todo["delete"] or todo["abort"])
    progress = Progress(to_upload_bytes, len(todo["upload"]), None if check_mode else p["progress_file"],
                        what="%s -> s3://%s/%s" % (p["src"], p["bucket"], p["prefix"].strip("/")))
    verified = False
    if not check_mode:
        with progress:
            if todo["abort"]:
                store.abort_uploads(todo["abort"])
            for src, files in sorted(copies.items()):
                store.copy_in(src, files)
            if todo["upload"]:
                store.upload(p["src"], todo["upload"], progress)
            if todo["manifest"]:
                store.put_bytes(MANIFEST_KEY, canonical_bytes(manifest))
            if todo["delete"]:
                store.delete(todo["delete"])
            if p["verify"]:
                progress.set_phase("verify")
                bad = store.read_back(todo["upload"] + [f for files in copies.values() for f in files])
                if bad:
                    raise CheckpointError("read-back verification failed: s3://%s/%s returned other bytes than the manifest "
                                          "for %s right after uploading them again; the object store does not keep what it "
                                          "is sent (check its disks and logs)" % (p["bucket"], p["prefix"], ", ".join(bad)), bad)
                verified = True
            progress.done()
    return dict(
        changed=changed,
        bucket=p["bucket"],
        prefix=p["prefix"].strip("/"),
        uploaded=[f["path"] for f in todo["upload"]],
        copied=copied,
        bytes_copied=sum(f["size"] for files in copies.values() for f in files),
        corrupt=corrupt,
        deleted=todo["delete"],
        extra=todo["extra"],
        skipped_files=len(manifest["files"]) - len(todo["upload"]) - len(copied),
        aborted_uploads=[k for k, _u in todo["abort"]],
        manifest_uploaded=todo["manifest"],
        bytes_uploaded=0 if check_mode else progress.done_bytes,
        bytes_to_upload=to_upload_bytes,
        bytes_total=sum(f["size"] for f in manifest["files"]),
        files=len(manifest["files"]),
        manifest_digest=digest,
        hashed_locally=hashed,
        verified=verified,
        seconds=round(time.monotonic() - start, 3),
        log=progress.log,
        diff=diff(manifest, remote, todo),
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=str(BOTO3_IMPORT_ERROR))
    try:
        result = run(module.params, module.check_mode)
    except OnpremError as e:  # CheckpointError too: every error of the collection is an OnpremError
        module.fail_json(msg=str(e), **e.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
