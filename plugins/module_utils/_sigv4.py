# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to llmops.onprem; may change without notice.

AWS Signature Version 4 for S3-style requests: the S3 API of any S3-compatible store and
MinIO's admin API (which signs like S3, service ``s3``). Pure functions of their inputs (the
clock is a parameter), so tests can pin every byte of a signed request without a server.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from urllib.parse import quote

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
ALGORITHM = "AWS4-HMAC-SHA256"


def uri_encode(value, keep_slash=False):
    """Percent-encode like SigV4: unreserved characters stay, everything else is %XX (upper case)."""
    return quote(value, safe="-_.~/" if keep_slash else "-_.~")


def canonical_query(query):
    """Canonical query string from a dict or a list of (name, value) pairs."""
    pairs = query.items() if hasattr(query, "items") else (query or [])
    encoded = sorted((uri_encode(str(k)), uri_encode("" if v is None else str(v))) for k, v in pairs)
    return "&".join("%s=%s" % kv for kv in encoded)


def _hmac(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key, datestamp, region, service):
    """The derived SigV4 signing key (kSigning)."""
    k_date = _hmac(("AWS4" + secret_key).encode("utf-8"), datestamp)
    return _hmac(_hmac(_hmac(k_date, region), service), "aws4_request")


class SignedRequest(object):
    """A request ready to send, with the intermediate values a test may want to check."""

    def __init__(self, method, path, query_string, headers, body, canonical_request, string_to_sign, signature):
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.canonical_request = canonical_request
        self.string_to_sign = string_to_sign
        self.signature = signature

    @property
    def target(self):
        """Request target for http.client: encoded path plus query string."""
        return uri_encode(self.path, keep_slash=True) + ("?" + self.query_string if self.query_string else "")


def sign(method, host, path, query=None, headers=None, body=b"", access_key="", secret_key="",
         region="us-east-1", service="s3", now=None):
    """Sign a request with SigV4 (header-based, payload hash sent in X-Amz-Content-Sha256).

    ``host`` is the Host header value (``name`` or ``name:port`` exactly as sent); ``path`` is
    the unencoded object path (``/bucket/key``). Returns a SignedRequest whose headers include
    Host, X-Amz-Date, X-Amz-Content-Sha256 and Authorization.
    """
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    datestamp = now.strftime("%Y%m%d")
    body = body or b""
    payload_hash = hashlib.sha256(body).hexdigest()

    signed = {}
    for name, value in (headers or {}).items():
        signed[name.lower()] = " ".join(str(value).split())
    signed["host"] = host
    signed["x-amz-date"] = amz_date
    signed["x-amz-content-sha256"] = payload_hash
    names = sorted(signed)
    signed_headers = ";".join(names)
    canonical_headers = "".join("%s:%s\n" % (n, signed[n]) for n in names)
    query_string = canonical_query(query or {})
    canonical_request = "\n".join([
        method.upper(), uri_encode(path or "/", keep_slash=True), query_string,
        canonical_headers, signed_headers, payload_hash])
    scope = "%s/%s/%s/aws4_request" % (datestamp, region, service)
    string_to_sign = "\n".join([
        ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()])
    signature = hmac.new(signing_key(secret_key, datestamp, region, service),
                         string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out = dict((n, signed[n]) for n in names)
    out["authorization"] = "%s Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        ALGORITHM, access_key, scope, signed_headers, signature)
    return SignedRequest(method.upper(), path or "/", query_string, out, body,
                         canonical_request, string_to_sign, signature)
