# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to llmops.onprem; may change without notice.

The collection's one S3 client transport: standard library only (http.client, ssl), SigV4 from
_sigv4, TLS verified against one CA bundle (never the system store when a bundle is given),
path-style addressing, no proxies, no redirects. Errors are one type, OnpremError, whose ``kind``
tells an unreachable endpoint from a TLS failure from a refusal.

Used by the site checks, bucket creation, MinIO's admin API, the checkpoint stores' plan reads
and model-pull (serving/model-pull), which streams ranged GETs over it (``open``, ``keep_alive``).
Like _sigv4, it runs outside Ansible too: the model-pull image has it next to the script, with
_sigv4.py, _retry.py and _errors.py (serving/images/build.sh).
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit
from xml.etree import ElementTree

try:
    from ansible_collections.llmops.onprem.plugins.module_utils import _retry, _sigv4
    from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
except ImportError:  # in the model-pull image, _retry.py, _sigv4.py and _errors.py lie next to this file
    import _retry  # type: ignore[no-redef]  # pylint: disable=import-error
    import _sigv4  # type: ignore[no-redef]  # pylint: disable=import-error
    from _errors import OnpremError  # type: ignore[no-redef]  # pylint: disable=import-error

# A keep-alive connection the server closed while it lay idle fails like this on its next request:
# sent again once, at once, on a fresh connection (a reconnect, not a retry of a failed request).
_STALE = (http.client.RemoteDisconnected, http.client.ImproperConnectionState, BrokenPipeError, ConnectionResetError)

# S3 bucket naming rules (general purpose buckets).
_BUCKET_CHARS = re.compile(r"^[a-z0-9.-]+$")
_IPV4_SHAPED = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name_problems(name):
    """Reasons why S3 rejects ``name`` as a bucket name; an empty list when it is valid."""
    name = "" if name is None else str(name)
    out = []
    if not 3 <= len(name) <= 63:
        out.append("must be 3 to 63 characters long (has %d)" % len(name))
    if not _BUCKET_CHARS.match(name or "-"):
        out.append("may contain only lowercase letters, digits, '.' and '-'")
    if name and not (name[0].isalnum() and name[-1].isalnum()):
        out.append("must begin and end with a letter or digit")
    if ".." in name:
        out.append("must not contain two adjacent periods")
    if _IPV4_SHAPED.match(name):
        out.append("must not be formatted as an IP address")
    for prefix in _RESERVED_PREFIXES:
        if name.startswith(prefix):
            out.append("must not start with the reserved prefix '%s'" % prefix)
    for suffix in _RESERVED_SUFFIXES:
        if name.endswith(suffix):
            out.append("must not end with the reserved suffix '%s'" % suffix)
    return out


def _error_from_body(body):
    """(code, message) from an S3 XML or MinIO admin JSON error body."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    code = message = None
    try:
        root = ElementTree.fromstring(text)
        code, message = root.findtext("Code"), root.findtext("Message")
    except ElementTree.ParseError:
        match = re.search(r'"Code"\s*:\s*"([^"]*)"', text)
        code = match.group(1) if match else None
        match = re.search(r'"Message"\s*:\s*"([^"]*)"', text)
        message = match.group(1) if match else None
    return code, message


def error_code(body):
    """The S3 error code of an error answer's body (None when it has none)."""
    return _error_from_body(body)[0]


class Endpoint(object):
    """One S3-compatible endpoint and one credential.

    keep_alive=False: a connection per request, closed after it. keep_alive=True: one connection per thread,
    kept between requests (model-pull's many ranged GETs); a caller that leaves an answer unread calls discard()."""

    def __init__(self, url, access_key="", secret_key="", region="us-east-1", ca_path=None,
                 timeout=10, retries=2, clock=None, sleep=None, keep_alive=False):
        parts = urlsplit(url or "")
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise OnpremError("endpoint URL %r must look like https://host:port" % (url,), kind="input")
        if parts.path not in ("", "/") or parts.query:
            raise OnpremError("endpoint URL %r must not have a path or query (path-style buckets are added)" % (url,),
                              kind="input")
        self.url = url.rstrip("/")
        self.scheme = parts.scheme
        self.hostname = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.host_header = parts.netloc
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.ca_path = ca_path
        self.timeout = timeout
        self.retries = retries
        self.keep_alive = keep_alive
        self._clock = clock
        self._sleep = time.sleep if sleep is None else sleep
        self._context = None
        self._local = threading.local()

    def with_credential(self, access_key, secret_key):
        """The same endpoint, another credential."""
        return Endpoint(self.url, access_key, secret_key, self.region, self.ca_path, self.timeout,
                        self.retries, self._clock, self._sleep, self.keep_alive)

    # --- transport -------------------------------------------------------------------------
    def tls_context(self):
        """The TLS context of this endpoint (made once): the CA bundle when one is given, else the system store.
        A CA file that cannot be used raises OnpremError(kind="input")."""
        if self._context is None:
            try:
                self._context = (ssl.create_default_context(cafile=self.ca_path) if self.ca_path
                                 else ssl.create_default_context())
            except (OSError, ssl.SSLError) as e:
                raise OnpremError("the CA file %s cannot be used: %s" % (self.ca_path, e), kind="input") from e
        return self._context

    def _connection(self, fresh=False):
        """(connection, reused): this thread's kept connection, or a new one."""
        conn = getattr(self._local, "conn", None) if self.keep_alive else None
        if conn is not None and not fresh:
            return conn, True
        self.discard()
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.hostname, self.port, timeout=self.timeout, context=self.tls_context())
        else:
            conn = http.client.HTTPConnection(self.hostname, self.port, timeout=self.timeout)
        if self.keep_alive:
            self._local.conn = conn
        return conn, False

    def discard(self):
        """Close this thread's kept connection (after an answer left unread, or a failure on it)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _transport_error(self, e):
        """OnpremError for a transport failure (the cause kept: _retry tells a transient one by it)."""
        if isinstance(e, ssl.SSLCertVerificationError):
            return OnpremError("TLS verification of %s failed: %s" % (self.url, e.verify_message or e), kind="tls")
        if isinstance(e, ssl.SSLError):
            return OnpremError("TLS handshake with %s failed: %s" % (self.url, e), kind="tls")
        if isinstance(e, (socket.timeout, TimeoutError)):
            err = OnpremError("%s did not answer within %s s: %s" % (self.url, self.timeout, e), kind="unreachable")
        elif isinstance(e, http.client.RemoteDisconnected) and self.scheme == "https":
            return OnpremError("TLS connection to %s was closed: %s" % (self.url, e), kind="tls")
        else:
            err = OnpremError("cannot connect to %s: %s" % (self.url, e), kind="unreachable")
        err.__cause__ = e
        return err

    def _exchange(self, request):
        """(connection, response) of one signed request, the body unread. A kept connection that the server
        closed is replaced once; any other transport failure raises OnpremError."""
        for attempt in (0, 1):
            conn, reused = self._connection(fresh=attempt > 0)
            try:
                conn.request(request.method, request.target, body=request.body or None, headers=request.headers)
                return conn, conn.getresponse()
            except _STALE as e:
                self.discard()
                if not (reused and attempt == 0):
                    conn.close()
                    raise self._transport_error(e)
            except (OSError, http.client.HTTPException) as e:
                self.discard()
                conn.close()
                raise self._transport_error(e)
        raise OnpremError("cannot connect to %s" % self.url, kind="unreachable")  # pragma: no cover

    def open(self, method, path, query=None, headers=None, region=None):
        """Sign and send a request without a body; the response is returned unread (a stream). The caller reads it
        whole, or calls discard(). Transport failures raise OnpremError; HTTP error statuses do not."""
        return self._exchange(self.build(method, path, query, b"", headers, region))[1]

    def build(self, method, path, query=None, body=b"", headers=None, region=None):
        """The signed request (no I/O)."""
        now = self._clock() if self._clock else None
        return _sigv4.sign(method, self.host_header, path, query=query, headers=headers, body=body,
                           access_key=self.access_key, secret_key=self.secret_key,
                           region=self.region if region is None else region, now=now)

    def send(self, request, limit=None):
        """Send a SignedRequest once. Returns (status, headers, body); raises OnpremError for
        transport failures (never for HTTP error statuses), and for a body over ``limit`` bytes (read no further)."""
        conn, resp = self._exchange(request)
        keep = False
        try:
            body = resp.read() if limit is None else resp.read(limit + 1)
            if limit is not None and len(body) > limit:
                raise OnpremError("%s %s on %s answered more than %d bytes, more than such an answer can be: refused "
                                  "unread (is the endpoint an S3 object store?)" % (request.method, request.path, self.url, limit),
                                  kind="protocol", status=resp.status)
            keep = self.keep_alive and not resp.will_close
            return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), body
        except (OSError, http.client.HTTPException) as e:
            raise self._transport_error(e)
        finally:
            if not keep:
                if self.keep_alive:
                    self.discard()
                conn.close()

    def call(self, method, path, query=None, body=b"", headers=None, ok=(200,), retry=None, region=None, limit=None):
        """Sign and send; transient failures of GET and HEAD (``retry``: of this request) are tried again with a
        jittered backoff (module_utils/_retry.py; a POST never is). A refused connection is an answer (nothing
        listens there), not a hiccup: it is not retried. Returns (status, headers, body) for statuses in ``ok``;
        raises OnpremError otherwise. ``limit``: the most bytes the answer may have (send())."""
        retry = method.upper() in ("GET", "HEAD") if retry is None else retry
        tries = _retry.Retry(method, 1 + (self.retries if retry else 0), refused=False, statuses=_retry.S3_TRANSIENT_STATUS,
                             sleep=self._sleep)
        while True:
            try:
                request = self.build(method, path, query, body, headers, region)
                status, headers_out, data = self.send(request) if limit is None else self.send(request, limit)
            except OnpremError as e:
                if tries.again(exc=e):
                    continue
                raise
            if status in ok:
                return status, headers_out, data
            if tries.again(status=status):
                continue
            code, message = _error_from_body(data)
            raise OnpremError("%s %s answered HTTP %s%s%s" % (
                method.upper(), path, status, (" " + code) if code else "", (": " + message) if message else ""),
                kind="http", status=status, code=code or str(status))

    # --- S3 operations ---------------------------------------------------------------------
    def list_buckets(self):
        """Names of the buckets this credential sees (a signed GET /: proves the credential)."""
        _status, _headers, data = self.call("GET", "/")
        try:
            root = ElementTree.fromstring(data)
        except ElementTree.ParseError as e:
            raise OnpremError("GET / on %s did not return an S3 bucket list: %s" % (self.url, e), kind="protocol")
        return sorted(el.text for el in root.iter() if el.tag.split("}")[-1] == "Name" and el.text)

    def authenticates(self):
        """True when the endpoint accepts this credential's signature (a signed GET /).

        A credential that may not list all buckets (AccessDenied) still authenticates; an
        unknown access key or a wrong secret raises OnpremError with its S3 error code."""
        try:
            self.call("GET", "/")
        except OnpremError as e:
            if e.code != "AccessDenied":
                raise
        return True

    def bucket_state(self, bucket):
        """``present``, ``missing`` or ``denied`` (exists, but this credential may not use it),
        from a signed GetBucketLocation, which unlike HEAD returns an error code."""
        try:
            self.call("GET", "/" + bucket, query={"location": ""})
            return "present"
        except OnpremError as e:
            if e.code == "NoSuchBucket" or (e.status == 404 and e.code in (None, "404")):
                return "missing"
            if e.code == "AccessDenied":
                return "denied"
            raise

    def create_bucket_request(self, bucket):
        """The signed CreateBucket request (a location constraint outside us-east-1)."""
        body = b""
        if self.region and self.region != "us-east-1":
            body = ('<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                    "<LocationConstraint>%s</LocationConstraint></CreateBucketConfiguration>" % self.region).encode()
        return "PUT", "/" + bucket, body

    def create_bucket(self, bucket):
        """Create a bucket; one that this credential already owns counts as created."""
        method, path, body = self.create_bucket_request(bucket)
        try:
            self.call(method, path, body=body, retry=False)
        except OnpremError as e:
            if e.code != "BucketAlreadyOwnedByYou":
                raise


def endpoint_argument_spec():
    """Argument spec of the llmops.onprem.s3_endpoint doc fragment."""
    return dict(
        endpoint_url=dict(type="str", required=True),
        access_key=dict(type="str", required=True, no_log=False),
        secret_key=dict(type="str", required=True, no_log=True),
        region=dict(type="str", default="us-east-1"),
        ca_path=dict(type="path"),
        timeout=dict(type="int", default=10),
    )


def endpoint_from_params(params):
    """An Endpoint from module parameters (raises OnpremError for a malformed URL)."""
    return Endpoint(params["endpoint_url"], params["access_key"], params["secret_key"], params["region"],
                    params.get("ca_path"), params["timeout"])
