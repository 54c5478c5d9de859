# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to llmops.onprem; may change without notice.

MinIO's admin API, as far as the minio role needs it: canned policies, users, and attaching
policies to users. Requests are what madmin-go (MinIO's admin client) sends:

* path ``/minio/admin/<v3|v4>/<operation>``, SigV4 with service ``s3`` and an empty region,
  ``X-Amz-Content-Sha256`` set (MinIO rejects admin requests without it);
* bodies that carry secrets (add-user, policy attach) are encrypted like madmin's
  ``EncryptData``: ``salt(32) | 0x02 | nonce(8) | sio stream`` where the key is
  PBKDF2-HMAC-SHA256(root secret key, salt, 8192 rounds, 32 bytes) and the stream is
  secure-io/sio-go's AES-256-GCM stream (16 KiB fragments, little-endian sequence numbers).

This has been checked against madmin-go/sio-go sources and sio's published test vectors, not
against a running MinIO (tests/unit; the role's README says so).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

from ansible_collections.llmops.onprem.plugins.module_utils._s3_endpoint import OnpremError

try:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - reported by the module with missing_required_lib
    AESGCM = None
    HAS_CRYPTOGRAPHY = False

SIO_BUF_SIZE = 1 << 14
ARGON2ID_AES_GCM = 0x00
PBKDF2_AES_GCM = 0x02
PBKDF2_COST = 8192
ADMIN_PREFIX = "/minio/admin"

# Credentials that cannot sign at all, as opposed to credentials that may not do something.
AUTH_FAILURE_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId",
                      "XMinioAdminNoSuchUser", "AuthorizationHeaderMalformed")


# --- encryption (madmin EncryptData) -----------------------------------------------------------
def _sio_nonce(nonce, seq):
    return nonce + struct.pack("<I", seq)


def sio_encrypt(aead, nonce, plaintext, associated_data=b"", buf_size=SIO_BUF_SIZE):
    """secure-io/sio-go EncWriter: Write(plaintext) once, then Close()."""
    tag = aead.encrypt(_sio_nonce(nonce, 0), b"", associated_data or None)
    ad = b"\x00" + tag
    out, seq, data = [], 1, plaintext
    while len(data) > buf_size:
        out.append(aead.encrypt(_sio_nonce(nonce, seq), data[:buf_size], ad))
        seq += 1
        data = data[buf_size:]
    out.append(aead.encrypt(_sio_nonce(nonce, seq), data, b"\x80" + tag))
    return b"".join(out)


def sio_decrypt(aead, nonce, ciphertext, associated_data=b"", buf_size=SIO_BUF_SIZE, overhead=16):
    """Inverse of sio_encrypt (raises cryptography's InvalidTag on tampering)."""
    tag = aead.encrypt(_sio_nonce(nonce, 0), b"", associated_data or None)
    ad = b"\x00" + tag
    frag = buf_size + overhead
    out, seq, data = [], 1, ciphertext
    while len(data) > frag:
        out.append(aead.decrypt(_sio_nonce(nonce, seq), data[:frag], ad))
        seq += 1
        data = data[frag:]
    out.append(aead.decrypt(_sio_nonce(nonce, seq), data, b"\x80" + tag))
    return b"".join(out)


def _pbkdf2_key(password, salt):
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, PBKDF2_COST, 32)


def encrypt_data(password, data, salt=None, nonce=None):
    """madmin.EncryptData with the PBKDF2/AES-256-GCM scheme (ID 0x02), which every MinIO
    server since 2021 decrypts (FIPS or not)."""
    if not HAS_CRYPTOGRAPHY:
        raise OnpremError("the Python 'cryptography' package is required to encrypt MinIO admin requests",
                          kind="input")
    salt = os.urandom(32) if salt is None else salt
    nonce = os.urandom(8) if nonce is None else nonce
    if len(salt) != 32 or len(nonce) != 8:
        raise OnpremError("salt must be 32 bytes and nonce 8 bytes", kind="input")
    aead = AESGCM(_pbkdf2_key(password, salt))
    return salt + bytes([PBKDF2_AES_GCM]) + nonce + sio_encrypt(aead, nonce, data)


def decrypt_data(password, blob):
    """madmin.DecryptData for the PBKDF2 scheme (what encrypt_data writes)."""
    if len(blob) < 41:
        raise OnpremError("encrypted data is shorter than its header", kind="protocol")
    salt, algo, nonce = blob[:32], blob[32], blob[33:41]
    if algo != PBKDF2_AES_GCM:
        raise OnpremError("unsupported encryption scheme 0x%02x" % algo, kind="protocol")
    return sio_decrypt(AESGCM(_pbkdf2_key(password, salt)), nonce, blob[41:])


# --- policies ----------------------------------------------------------------------------------
READ_OBJECT = ["s3:GetObject"]
WRITE_OBJECT = ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:ListMultipartUploadParts", "s3:PutObject"]


def _arn(resource):
    return "arn:aws:s3:::" + resource


def split_resources(resources):
    """({bucket: None for whole buckets}, {bucket: [prefixes]}) from 'bucket' / 'bucket/prefix'."""
    whole, prefixed = [], {}
    for item in resources:
        bucket, _sep, prefix = str(item).strip("/").partition("/")
        if not bucket:
            raise OnpremError("empty bucket in resource %r" % (item,), kind="input")
        if prefix:
            prefixed.setdefault(bucket, [])
            if prefix.strip("/") not in prefixed[bucket]:
                prefixed[bucket].append(prefix.strip("/"))
        elif bucket not in whole:
            whole.append(bucket)
    for bucket in whole:
        prefixed.pop(bucket, None)  # the whole bucket covers its prefixes
    return sorted(whole), dict((b, sorted(p)) for b, p in sorted(prefixed.items()))


def build_policy(access, resources):
    """A least-privilege IAM policy (MinIO canned policy) for ``readonly`` or ``readwrite``
    access to whole buckets (``bucket``) and prefixes (``bucket/prefix``). It never grants
    bucket creation or deletion, policy or admin actions, or s3:ListAllMyBuckets."""
    if access not in ("readonly", "readwrite"):
        raise OnpremError("access must be readonly or readwrite, got %r" % (access,), kind="input")
    whole, prefixed = split_resources(resources)
    if not whole and not prefixed:
        raise OnpremError("a policy needs at least one bucket", kind="input")
    buckets = sorted(set(whole) | set(prefixed))
    statements = [{"Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": [_arn(b) for b in buckets]}]
    if whole:
        actions = ["s3:ListBucket"] + (["s3:ListBucketMultipartUploads"] if access == "readwrite" else [])
        statements.append({"Effect": "Allow", "Action": actions, "Resource": [_arn(b) for b in whole]})
    for bucket, prefixes in prefixed.items():
        statements.append({
            "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [_arn(bucket)],
            "Condition": {"StringLike": {"s3:prefix": sorted(prefixes + [p + "/*" for p in prefixes])}}})
    objects = [_arn(b + "/*") for b in whole]
    for bucket, prefixes in prefixed.items():
        objects += [_arn("%s/%s/*" % (bucket, p)) for p in prefixes]
    actions = READ_OBJECT + (WRITE_OBJECT if access == "readwrite" else [])
    statements.append({"Effect": "Allow", "Action": sorted(actions), "Resource": objects})
    return {"Version": "2012-10-17", "Statement": statements}


def _as_sorted_list(value):
    if value is None:
        return []
    return sorted([value] if isinstance(value, str) else list(value))


def normalize_policy(doc):
    """A comparable form: statement order, action/resource order and Sid-less noise ignored."""
    if doc is None:
        return None
    if isinstance(doc, (bytes, str)):
        doc = json.loads(doc)
    statements = []
    for st in doc.get("Statement") or []:
        cond = {}
        for op, kv in (st.get("Condition") or {}).items():
            cond[op] = dict((k, _as_sorted_list(v)) for k, v in kv.items())
        item = {"Effect": st.get("Effect"), "Action": _as_sorted_list(st.get("Action")),
                "Resource": _as_sorted_list(st.get("Resource"))}
        if cond:
            item["Condition"] = cond
        statements.append(json.dumps(item, sort_keys=True))
    return {"Version": doc.get("Version"), "Statement": sorted(statements)}


# --- requests ----------------------------------------------------------------------------------
class AdminRequest(object):
    """An admin API call before signing: what tests pin down."""

    def __init__(self, method, path, query=None, body=b"", headers=None, ok=(200,)):
        self.method = method
        self.path = path
        self.query = query or {}
        self.body = body
        self.headers = headers or {}
        self.ok = ok


class MinioAdmin(object):
    """Admin API calls over an _s3_endpoint.Endpoint holding the root (or an admin) credential."""

    def __init__(self, endpoint, api_version="v3"):
        if api_version not in ("v3", "v4"):
            raise OnpremError("api_version must be v3 or v4", kind="input")
        self.endpoint = endpoint
        self.api_version = api_version

    def _path(self, operation):
        return "%s/%s/%s" % (ADMIN_PREFIX, self.api_version, operation)

    # request construction (pure apart from the random salt/nonce of encrypted bodies)
    def info_canned_policy_request(self, name):
        return AdminRequest("GET", self._path("info-canned-policy"), {"name": name, "v": "2"})

    def add_canned_policy_request(self, name, policy):
        body = json.dumps(policy, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return AdminRequest("PUT", self._path("add-canned-policy"), {"name": name}, body)

    def user_info_request(self, access_key):
        return AdminRequest("GET", self._path("user-info"), {"accessKey": access_key})

    def set_user_request(self, access_key, secret_key, status="enabled", salt=None, nonce=None):
        plain = json.dumps({"secretKey": secret_key, "status": status}).encode("utf-8")
        return AdminRequest("PUT", self._path("add-user"), {"accessKey": access_key},
                            encrypt_data(self.endpoint.secret_key, plain, salt, nonce))

    def policy_association_request(self, attach, access_key, policies, salt=None, nonce=None):
        plain = json.dumps({"policies": list(policies), "user": access_key}).encode("utf-8")
        return AdminRequest("POST", self._path("idp/builtin/policy/" + ("attach" if attach else "detach")), None,
                            encrypt_data(self.endpoint.secret_key, plain, salt, nonce),
                            {"Content-Type": "application/octet-stream"}, ok=(200, 201, 204))

    # sending
    def call(self, request):
        try:
            return self.endpoint.call(request.method, request.path, request.query, request.body,
                                      request.headers, ok=request.ok, region="")
        except OnpremError as e:
            if e.code in ("NoSuchBucket", "NoSuchKey", "UnsupportedAlgorithm", "MethodNotAllowed", "XAmzContentSHA256Mismatch"):
                raise OnpremError(
                    "%s does not implement MinIO's admin API (%s %s answered %s); it is not a MinIO "
                    "server, or not one this module supports" % (self.endpoint.url, request.method, request.path, e.code),
                    kind="protocol", status=e.status, code=e.code)
            raise

    def _json(self, request, missing_code):
        try:
            _status, _headers, data = self.call(request)
        except OnpremError as e:
            if e.code == missing_code:
                return None
            raise
        try:
            return json.loads(data.decode("utf-8") or "null")
        except ValueError as e:
            raise OnpremError("%s %s did not return JSON: %s" % (request.method, request.path, e), kind="protocol")

    def get_policy(self, name):
        info = self._json(self.info_canned_policy_request(name), "XMinioAdminNoSuchPolicy")
        if info is None:
            return None
        return info.get("Policy", info) if isinstance(info, dict) else info

    def put_policy(self, name, policy):
        self.call(self.add_canned_policy_request(name, policy))

    def get_user(self, access_key):
        return self._json(self.user_info_request(access_key), "XMinioAdminNoSuchUser")

    def set_user(self, access_key, secret_key):
        self.call(self.set_user_request(access_key, secret_key))

    def associate(self, attach, access_key, policies):
        try:
            self.call(self.policy_association_request(attach, access_key, policies))
        except OnpremError as e:
            if e.code != "XMinioAdminPolicyChangeAlreadyApplied":
                raise


def user_policies(user_info):
    """Policy names attached to a user, from user-info's comma-separated policyName."""
    names = (user_info or {}).get("policyName") or ""
    return [n.strip() for n in names.split(",") if n.strip()]


def plan_user(before, policy_name, policy):
    """Pure planner: the admin actions that take ``before`` to the desired state.

    before: {"policy": <current policy doc or None>, "user": <user-info or None>,
             "secret_ok": <the desired secret authenticates>}
    Returns a list of (action, argument) in the order they must run.
    """
    actions = []
    if normalize_policy(before.get("policy")) != normalize_policy(policy):
        actions.append(("put_policy", policy_name))
    user = before.get("user")
    if user is None:
        actions.append(("create_user", None))
    elif not before.get("secret_ok") or user.get("status") != "enabled":
        actions.append(("reset_user", "secret" if not before.get("secret_ok") else "status"))
    attached = user_policies(user)
    others = [p for p in attached if p != policy_name]
    if others:
        actions.append(("detach", others))
    if policy_name not in attached:
        actions.append(("attach", [policy_name]))
    return actions
