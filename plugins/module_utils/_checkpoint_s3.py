# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to llmops.onprem; may change without notice.

The object-store side of checkpoint_sync. The reads a plan needs (the listing of a prefix with each object's
size, the open multipart uploads under it, a small object such as the manifest) go over the collection's
standard-library S3 client (_s3_endpoint.Endpoint: SigV4, bounded reads, jittered retries of transient
failures); a sync that finds nothing to do never loads boto3, whose import and client creation cost more than
the whole no-op re-sync (bench/checkpoints). The rest is boto3/s3transfer, loaded on first use: each object's
sha256 metadata (HEAD, in parallel), parallel multipart uploads that store the sha256 in ``x-amz-meta-sha256``,
server-side copies, aborts of open uploads (on resume), deletes, and read-back verification. Errors become
OnpremError with a message naming the endpoint, bucket and key.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
import os
import threading
import time
from urllib.parse import unquote_plus as unquote
from xml.etree import ElementTree

from ansible_collections.llmops.onprem.plugins.module_utils._progress import ProgressWriter
from ansible_collections.llmops.onprem.plugins.module_utils._s3_endpoint import Endpoint, OnpremError

# Whether boto3 can be imported, without importing it (modules fail early with missing_required_lib).
HAS_BOTO3 = importlib.util.find_spec("boto3") is not None and importlib.util.find_spec("s3transfer") is not None
BOTO3_IMPORT_ERROR = None if HAS_BOTO3 else "No module named 'boto3' (or 's3transfer')"


# botocore's exception classes stand here until boto3 is loaded (_load_boto3); these are never raised.
class ClientError(Exception):
    pass


class BotoCoreError(Exception):
    pass


class EndpointConnectionError(Exception):
    pass


class SSLError(Exception):
    pass


_LOAD_LOCK = threading.Lock()
_LOADED = []

META_SHA = "sha256"
MiB = 1024 * 1024
# One CopyObject copies at most 5 GiB (S3); a larger file is uploaded, not copied.
COPY_LIMIT = 5 * 1024 * MiB
CREDENTIAL_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied")
# The most one listing page (1000 keys at most, each up to 1 KiB, with its XML) or the manifest may be.
SMALL_MAX = 16 * MiB
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _load_boto3():
    """Import boto3 and botocore's exception classes once (module globals), on the first write or HEAD."""
    global ClientError, BotoCoreError, EndpointConnectionError, SSLError  # pylint: disable=global-statement,invalid-name
    with _LOAD_LOCK:
        import boto3  # pylint: disable=import-outside-toplevel
        if not _LOADED:
            from botocore import exceptions  # pylint: disable=import-outside-toplevel
            ClientError, BotoCoreError = exceptions.ClientError, exceptions.BotoCoreError
            EndpointConnectionError, SSLError = exceptions.EndpointConnectionError, exceptions.SSLError
            _LOADED.append(True)
    return boto3


def _code(err):
    if isinstance(err, ClientError):
        return err.response.get("Error", {}).get("Code") or str(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    return None


def _text(el, name):
    """The text of a child element, with or without the S3 namespace (some stores leave it out)."""
    found = el.find(S3_NS + name)
    if found is None:
        found = el.find(name)
    return None if found is None else (found.text or "")


def _children(root, name):
    return root.findall(S3_NS + name) + root.findall(name)


class Store(object):
    """One bucket and prefix on one endpoint, with one credential."""

    def __init__(self, endpoint_url, access_key, secret_key, region, ca_path, timeout, bucket, prefix,
                 parallel=16, part_size=64 * MiB):
        self.url = endpoint_url.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.parallel = max(1, parallel)
        self.part_size = part_size
        self._credential = (access_key, secret_key, region, ca_path, timeout)
        self._client = None
        # The plan's reads: 5 attempts in all, as boto3's standard retry mode below.
        self.endpoint = Endpoint(self.url, access_key, secret_key, region, ca_path, timeout, retries=4)

    @property
    def client(self):
        """The boto3 client, created on first use (HEAD, writes, copies, deletes, read-back)."""
        if self._client is None:
            boto3 = _load_boto3()
            from botocore.config import Config  # pylint: disable=import-outside-toplevel
            access_key, secret_key, region, ca_path, timeout = self._credential
            config = Config(s3={"addressing_style": "path"}, connect_timeout=timeout, read_timeout=max(timeout, 60),
                            retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=self.parallel * 2,
                            request_checksum_calculation="when_required", response_checksum_validation="when_required")
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.url, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                region_name=region, verify=ca_path if ca_path else True, config=config)
        return self._client

    @property
    def transfer_config(self):
        _load_boto3()
        from boto3.s3.transfer import TransferConfig  # pylint: disable=import-outside-toplevel
        return TransferConfig(multipart_threshold=self.part_size, multipart_chunksize=self.part_size,
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

    def http_error(self, err, what):
        """The OnpremError of a plan read (_s3_endpoint) with the same words as error() gives boto3's."""
        if err.kind == "tls":
            return OnpremError("TLS with %s failed during %s: %s" % (self.url, what, err), kind="tls")
        if err.kind == "unreachable":
            return OnpremError("cannot connect to %s (%s): %s" % (self.url, what, err), kind="unreachable")
        if err.code in CREDENTIAL_CODES:
            return OnpremError("%s refused the credential during %s (%s): check the access key and secret"
                               % (self.url, what, err.code), kind="http", status=403, code=err.code)
        if err.code == "NoSuchBucket":
            return OnpremError("bucket %s does not exist on %s: create it first (llmops.onprem.s3_buckets, the "
                               "minio role does)" % (self.bucket, self.url), kind="http", status=404, code=err.code)
        return OnpremError("%s on %s failed: %s" % (what, self.url, err), kind=err.kind, status=err.status, code=err.code)

    def get_xml(self, what, query):
        """One listing page of the bucket, parsed."""
        try:
            _status, _headers, body = self.endpoint.call("GET", "/" + self.bucket, query=query, limit=SMALL_MAX)
        except OnpremError as e:
            raise self.http_error(e, what)
        try:
            return ElementTree.fromstring(body)
        except ElementTree.ParseError as e:
            raise OnpremError("%s on %s: the answer is not S3's XML (%s)" % (what, self.url, e), kind="protocol")

    def call(self, what, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as e:
            raise self.error(e, what)

    # --- read ------------------------------------------------------------------------------
    def list(self):
        """{relative path: size} of every object under the prefix (ListObjectsV2, page by page)."""
        out = {}
        start = self.prefix + "/" if self.prefix else ""
        what = "listing s3://%s/%s" % (self.bucket, start)
        token = None
        while True:
            query = {"list-type": "2", "prefix": start, "encoding-type": "url"}
            if token:
                query["continuation-token"] = token
            root = self.get_xml(what, query)
            url_encoded = (_text(root, "EncodingType") or "").lower() == "url"
            for obj in _children(root, "Contents"):
                key, size = _text(obj, "Key"), _text(obj, "Size")
                if key is None or not (size or "").isdigit():
                    raise OnpremError("%s on %s: an entry without a key or size" % (what, self.url), kind="protocol")
                out[self.rel(unquote(key) if url_encoded else key)] = int(size)
            token = _text(root, "NextContinuationToken")
            if (_text(root, "IsTruncated") or "").lower() != "true":
                return out
            if not token:
                raise OnpremError("%s on %s: a truncated listing without a continuation token" % (what, self.url),
                                  kind="protocol")

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
        """The bytes of one (small: SMALL_MAX at most) object; None when it is gone."""
        what = "GET s3://%s/%s" % (self.bucket, self.key(rel))
        try:
            return self.endpoint.call("GET", "/%s/%s" % (self.bucket, self.key(rel)), limit=SMALL_MAX)[2]
        except OnpremError as e:
            if e.status == 404 and e.code in ("NoSuchKey", "404", None):
                return None
            raise self.http_error(e, what)

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
        what = "listing open multipart uploads"
        out = []
        markers = {}
        while True:
            query = dict({"uploads": "", "prefix": start, "encoding-type": "url"}, **markers)
            try:
                root = self.get_xml(what, query)
            except OnpremError as e:
                # rclone serve s3 answers NoSuchUpload when none is open under the prefix.
                if e.code in ("NotImplemented", "501", "NoSuchUpload"):
                    return []
                raise
            url_encoded = (_text(root, "EncodingType") or "").lower() == "url"
            for upload in _children(root, "Upload"):
                key, upload_id = _text(upload, "Key"), _text(upload, "UploadId")
                if key and upload_id:
                    out.append((unquote(key) if url_encoded else key, upload_id))
            if (_text(root, "IsTruncated") or "").lower() != "true":
                return sorted(out)
            nxt = (("key-marker", _text(root, "NextKeyMarker")), ("upload-id-marker", _text(root, "NextUploadIdMarker")))
            markers = dict((name, value) for name, value in nxt if value)
            if not markers:
                raise OnpremError("%s on %s: a truncated listing without its next markers" % (what, self.url),
                                  kind="protocol")

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
