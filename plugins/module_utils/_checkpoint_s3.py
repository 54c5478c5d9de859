# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to llmops.onprem; may change without notice.

The object-store side of checkpoint_sync, on boto3/s3transfer: list a prefix with each
object's size and sha256 metadata (HEAD, in parallel), read a small object, parallel multipart uploads that store
the sha256 in ``x-amz-meta-sha256``, open multipart uploads under the prefix (aborted on
resume), deletes, and read-back verification. Errors become OnpremError (from _s3_endpoint)
with a message naming the endpoint, bucket and key.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import time

try:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, SSLError
    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover - reported by the module
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = e

from ansible_collections.llmops.onprem.plugins.module_utils._progress import ProgressWriter
from ansible_collections.llmops.onprem.plugins.module_utils._s3_endpoint import OnpremError

META_SHA = "sha256"
MiB = 1024 * 1024
# One CopyObject copies at most 5 GiB (S3); a larger file is uploaded, not copied.
COPY_LIMIT = 5 * 1024 * MiB
CREDENTIAL_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied")


def _code(err):
    if isinstance(err, ClientError):
        return err.response.get("Error", {}).get("Code") or str(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    return None


class Store(object):
    """One bucket and prefix on one endpoint, with one credential."""

    def __init__(self, endpoint_url, access_key, secret_key, region, ca_path, timeout, bucket, prefix,
                 parallel=16, part_size=64 * MiB):
        self.url = endpoint_url.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.parallel = max(1, parallel)
        self.part_size = part_size
        config = Config(s3={"addressing_style": "path"}, connect_timeout=timeout, read_timeout=max(timeout, 60),
                        retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=self.parallel * 2,
                        request_checksum_calculation="when_required", response_checksum_validation="when_required")
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=self.url, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            region_name=region, verify=ca_path if ca_path else True, config=config)
        self.transfer_config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size,
                                              max_concurrency=self.parallel, use_threads=True)

    def key(self, rel):
        return "%s/%s" % (self.prefix, rel) if self.prefix else rel

    def rel(self, key):
        return key[len(self.prefix) + 1:] if self.prefix else key

    def error(self, err, what):
        code = _code(err)
        if isinstance(err, SSLError):
            return OnpremError("TLS with %s failed during %s: %s" % (self.url, what, err), kind="tls")
        if isinstance(err, EndpointConnectionError):
            return OnpremError("cannot connect to %s (%s): %s" % (self.url, what, err), kind="unreachable")
        if code in CREDENTIAL_CODES:
            return OnpremError("%s refused the credential during %s (%s): check the access key and secret"
                               % (self.url, what, code), kind="http", status=403, code=code)
        if code == "NoSuchBucket":
            return OnpremError("bucket %s does not exist on %s: create it first (llmops.onprem.s3_buckets, the "
                               "minio role does)" % (self.bucket, self.url), kind="http", status=404, code=code)
        return OnpremError("%s on %s failed: %s" % (what, self.url, err), kind="http", code=code)

    def call(self, what, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as e:
            raise self.error(e, what)

    # --- read ------------------------------------------------------------------------------
    def list(self):
        """{relative path: size} of every object under the prefix."""
        out = {}
        paginator = self.client.get_paginator("list_objects_v2")
        start = self.prefix + "/" if self.prefix else ""
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                for obj in page.get("Contents", []):
                    out[self.rel(obj["Key"])] = obj["Size"]
        except (ClientError, BotoCoreError) as e:
            raise self.error(e, "listing s3://%s/%s" % (self.bucket, start))
        return out

    def head_sha(self, rel):
        """(size, sha256 metadata or '') of one object; (None, '') when it is gone."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(rel))
        except ClientError as e:
            if _code(e) in ("404", "NoSuchKey", "NotFound"):
                return None, ""
            raise self.error(e, "HEAD s3://%s/%s" % (self.bucket, self.key(rel)))
        except BotoCoreError as e:
            raise self.error(e, "HEAD s3://%s/%s" % (self.bucket, self.key(rel)))
        meta = dict((k.lower(), v) for k, v in head.get("Metadata", {}).items())
        return head["ContentLength"], meta.get(META_SHA, "")

    def get_bytes(self, rel):
        """The bytes of one (small) object; None when it is gone."""
        what = "GET s3://%s/%s" % (self.bucket, self.key(rel))
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"].read()
        except ClientError as e:
            if _code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self.error(e, what)
        except BotoCoreError as e:
            raise self.error(e, what)

    def describe(self, rels_to_head, sizes=None):
        """{rel: {size, sha256}} for the listed objects (``sizes`` from list(), or listed now); sha256 read (HEAD)
        only for ``rels_to_head``."""
        if sizes is None:
            sizes = self.list()
        heads = [r for r in rels_to_head if r in sizes]
        out = dict((r, dict(size=s, sha256="")) for r, s in sizes.items())
        if heads:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.parallel, len(heads))) as pool:
                for rel, (size, sha) in zip(heads, pool.map(self.head_sha, heads)):
                    if size is None:
                        out.pop(rel, None)
                    else:
                        out[rel] = dict(size=size, sha256=sha)
        return out

    def open_uploads(self):
        """[(key, upload id)] of multipart uploads left open under the prefix (an interrupted sync)."""
        start = self.prefix + "/" if self.prefix else ""
        out = []
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                out.extend((u["Key"], u["UploadId"]) for u in page.get("Uploads", []))
        except ClientError as e:
            # rclone serve s3 answers NoSuchUpload when none is open under the prefix.
            if _code(e) in ("NotImplemented", "501", "NoSuchUpload"):
                return []
            raise self.error(e, "listing open multipart uploads")
        except BotoCoreError as e:
            raise self.error(e, "listing open multipart uploads")
        return sorted(out)

    # --- write -----------------------------------------------------------------------------
    def abort_uploads(self, uploads):
        for key, upload_id in uploads:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except ClientError as e:
                if _code(e) not in ("NoSuchUpload", "404"):
                    raise self.error(e, "aborting the open upload of %s" % key)

    def upload(self, root, files, progress):
        """Upload files ([{path, size, sha256}]) in parallel; multipart above the part size."""
        from s3transfer.manager import TransferManager
        from s3transfer.subscribers import BaseSubscriber

        class Sub(BaseSubscriber):
            def __init__(self, entry):
                super(Sub, self).__init__()
                self.entry = entry

            def on_progress(self, future, bytes_transferred, **kwargs):
                progress.add(bytes_transferred)

            def on_done(self, future, **kwargs):
                progress.file_done(self.entry)

        try:
            with TransferManager(self.client, self.transfer_config) as manager:
                futures = [manager.upload(os.path.join(root, f["path"]), self.bucket, self.key(f["path"]),
                                          extra_args={"Metadata": {META_SHA: f["sha256"]}}, subscribers=[Sub(f)])
                           for f in files]
                for fut in futures:
                    fut.result()
        except (ClientError, BotoCoreError) as e:
            raise self.error(e, "uploading to s3://%s/%s" % (self.bucket, self.prefix))

    def copy_in(self, source_prefix, files):
        """Server-side copies (CopyObject) into this prefix of objects under ``source_prefix`` (same bucket):
        [{path, size, sha256, source}], ``source`` being the path under the source prefix, each at most COPY_LIMIT bytes
        (S3's limit for one CopyObject). No byte crosses the network; each copy is written with the file's sha256
        metadata."""
        start = source_prefix.strip("/")

        def one(f):
            what = "copying s3://%s/%s/%s to s3://%s/%s" % (self.bucket, start, f["source"], self.bucket, self.key(f["path"]))
            self.call(what, self.client.copy_object, Bucket=self.bucket, Key=self.key(f["path"]),
                      CopySource={"Bucket": self.bucket, "Key": "%s/%s" % (start, f["source"])},
                      Metadata={META_SHA: f["sha256"]}, MetadataDirective="REPLACE")

        if files:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.parallel, len(files))) as pool:
                list(pool.map(one, files))

    def put_bytes(self, rel, data):
        self.call("writing s3://%s/%s" % (self.bucket, self.key(rel)), self.client.put_object, Bucket=self.bucket,
                  Key=self.key(rel), Body=data, ContentType="application/json",
                  Metadata={META_SHA: hashlib.sha256(data).hexdigest()})

    def delete(self, rels):
        for i in range(0, len(rels), 1000):
            batch = [{"Key": self.key(r)} for r in rels[i:i + 1000]]
            answer = self.call("deleting extra objects", self.client.delete_objects, Bucket=self.bucket,
                               Delete={"Objects": batch, "Quiet": True})
            if answer.get("Errors"):
                err = answer["Errors"][0]
                raise OnpremError("deleting %s failed: %s %s" % (err.get("Key"), err.get("Code"), err.get("Message")),
                                  kind="http", code=err.get("Code"))

    def read_back_sha(self, rel):
        """sha256 of the object's bytes as the store returns them."""
        h = hashlib.sha256()
        answer = self.call("reading back s3://%s/%s" % (self.bucket, self.key(rel)), self.client.get_object,
                           Bucket=self.bucket, Key=self.key(rel))
        body = answer["Body"]
        try:
            for block in iter(lambda: body.read(4 * MiB), b""):
                h.update(block)
        except BotoCoreError as e:
            raise self.error(e, "reading back %s" % rel)
        return h.hexdigest()

    def read_back(self, files):
        """Paths whose re-downloaded sha256 differs from the manifest."""
        if not files:
            return []
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.parallel, len(files))) as pool:
            got = list(pool.map(lambda f: self.read_back_sha(f["path"]), files))
        return [f["path"] for f, sha in zip(files, got) if sha != f["sha256"]]


class Progress(ProgressWriter):
    """The collection's one progress writer (module_utils/_progress.py) plus the per-file log the module returns."""

    def __init__(self, total_bytes, total_files, path=None, what="", clock=time.monotonic):
        super(Progress, self).__init__(path, "checkpoint_sync", what, bytes_total=total_bytes, files_total=total_files,
                                       phase="upload", clock=clock)
        self.log = []

    @property
    def done_bytes(self):
        return self.bytes_done

    def file_done(self, entry):  # pylint: disable=arguments-renamed
        with self.lock:
            self.log.append(dict(path=entry["path"], bytes=entry["size"], action="uploaded",
                                 seconds=round(self.clock() - self.t0, 3)))
            self.add(0, 1)
            if self.files_done == self.files_total:
                self.write()
