"""_minio_admin: madmin-compatible encryption, policies and admin requests, without a server.

None of this has run against a real MinIO (the test harness has no MinIO binary). The sio
stream is pinned to secure-io/sio-go's published test vectors; the request shapes follow
madmin-go's sources (policy-commands.go, user-commands.go, encrypt.go, api.go)."""
import datetime
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ansible_collections.llmops.onprem.plugins.module_utils import _minio_admin as m
from ansible_collections.llmops.onprem.plugins.module_utils._s3_endpoint import Endpoint, OnpremError

NOW = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
ROOT_SECRET = "r" * 40

# secure-io/sio-go test_vectors.json, the AES-GCM entries (key, nonce, ad, plaintext, ciphertext, bufsize).
SIO_VECTORS = [
    ("00000000000000000000000000000000", "0000000000000000", "", "", "e0247a864e783cecb1f7996c13cd3f64", 16),
    ("10000000000000000000000000000000", "1000000000000000", "00", "00", "61ed193d12a2adf6f1c41f31de4ead6c5c", 16),
    ("00000000000000000000000000000000", "0000000000000000", "0000000000000000", "0000000000000000",
     "4661d681f92680d7a307c7a036700edde4697a1f3ba7e01b", 16),
    ("0a7a6d49e4ad042f1e1ffa168849d651", "4a9ba500be169ab3", "d40703848d887a01664c30734fa370581c5f8f6d0ea7bfdd",
     "424d6d60d7e08b3b41e968fc4557b93c", "aa4b4ca42d587b98d0d5f009c0efbc4fcaaefdc1c79a3cfe07801ed8c708d259", 16),
    ("10000000000000000000000000000000", "0000000000000002", "", "0000000000000000000000000000000000",
     "691deb7b9ccbee91f48d12c7ad5fe3cd4e1e5e7d394f06b91228ec9a5dd2456ac7de9502a0b4010fb1ee1db94e940458fb", 16),
    ("20000000000000000000000000000000", "2000000000000000", "00", "00" * 32,
     "f58d8fef7ac7782a4361a79c07f5e6c4672d8a45e6cb9ef67cb7177897358deb8d338d313d44f78e0b68a3723d7ca0fe"
     "5f62aa8af0a72e508f5d5f8491ecedb2", 16),
    ("31dd758d120fd5d30063921a21f723be", "d3794fe387018e32",
     "1d838b6e861ea7576de110e08818de82a27337a99db7b95aa95c3347971ad4cfa0ef0960d6645f5a64f88c7d",
     "d0ae0d85e93ed6be853ded2031643116a03215b4fda224d2986d7233039aa47e91b686f4",
     "a6fe911b94e0b25a25bf6da71f28ad6a6b6920be01589e9194226f77c164606545d5cbdb76c99415b468c54517f5a8bc"
     "8dc8ac13b1b4285fe36f37f7884d5e4bfb32ecef56b4026bf02bfb1d4fce222e01ef9db9", 17),
]


@pytest.mark.parametrize("key, nonce, ad, plain, cipher, buf", SIO_VECTORS)
def test_sio_stream_matches_the_published_vectors(key, nonce, ad, plain, cipher, buf):
    aead = AESGCM(bytes.fromhex(key))
    out = m.sio_encrypt(aead, bytes.fromhex(nonce), bytes.fromhex(plain), bytes.fromhex(ad), buf_size=buf)
    assert out.hex() == cipher
    assert m.sio_decrypt(aead, bytes.fromhex(nonce), out, bytes.fromhex(ad), buf_size=buf).hex() == plain


def test_encrypt_data_layout_is_salt_id_nonce_stream():
    salt, nonce = bytes(range(32)), bytes(range(8))
    blob = m.encrypt_data(ROOT_SECRET, b'{"secretKey":"x"}', salt, nonce)
    assert blob[:32] == salt and blob[32] == 0x02 and blob[33:41] == nonce
    assert len(blob) == 41 + len(b'{"secretKey":"x"}') + 16  # one final fragment, one GCM tag
    key = hashlib.pbkdf2_hmac("sha256", ROOT_SECRET.encode(), salt, 8192, 32)
    assert m.sio_decrypt(AESGCM(key), nonce, blob[41:]) == b'{"secretKey":"x"}'
    assert m.decrypt_data(ROOT_SECRET, blob) == b'{"secretKey":"x"}'


def test_encrypt_data_spans_fragments_and_uses_fresh_salt_and_nonce():
    data = b"x" * (m.SIO_BUF_SIZE * 2 + 5)
    a, b = m.encrypt_data(ROOT_SECRET, data), m.encrypt_data(ROOT_SECRET, data)
    assert a[:41] != b[:41]
    assert len(a) == 41 + len(data) + 3 * 16
    assert m.decrypt_data(ROOT_SECRET, a) == data


def test_another_password_cannot_decrypt():
    blob = m.encrypt_data(ROOT_SECRET, b"secret")
    with pytest.raises(Exception):
        m.decrypt_data("not-the-root-password", blob)


def test_readonly_policy_for_a_bucket_and_a_prefix():
    policy = m.build_policy("readonly", ["model-checkpoints", "llm-engine/fine_tuned_weights"])
    assert policy == {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetBucketLocation"],
         "Resource": ["arn:aws:s3:::llm-engine", "arn:aws:s3:::model-checkpoints"]},
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::model-checkpoints"]},
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::llm-engine"],
         "Condition": {"StringLike": {"s3:prefix": ["fine_tuned_weights", "fine_tuned_weights/*"]}}},
        {"Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": ["arn:aws:s3:::model-checkpoints/*", "arn:aws:s3:::llm-engine/fine_tuned_weights/*"]},
    ]}


def test_readwrite_policy_adds_writes_but_no_bucket_or_admin_actions():
    policy = m.build_policy("readwrite", ["llm-engine", "model-checkpoints", "llm-engine/ignored-prefix"])
    actions = sorted(a for st in policy["Statement"] for a in st["Action"])
    assert actions == sorted(["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads",
                              "s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject",
                              "s3:ListMultipartUploadParts", "s3:PutObject"])
    assert not any(a.startswith("admin:") or a in ("s3:*", "s3:CreateBucket", "s3:DeleteBucket", "s3:ListAllMyBuckets")
                   for a in actions)
    objects = policy["Statement"][-1]["Resource"]
    assert objects == ["arn:aws:s3:::llm-engine/*", "arn:aws:s3:::model-checkpoints/*"]


@pytest.mark.parametrize("access, resources", [("admin", ["b"]), ("readonly", [])])
def test_bad_policy_input_is_refused(access, resources):
    with pytest.raises(OnpremError):
        m.build_policy(access, resources)


def test_policies_compare_by_meaning_not_by_order():
    ours = m.build_policy("readonly", ["model-checkpoints"])
    # What MinIO returns: statements reordered, single actions as strings, a Sid.
    theirs = {"Version": "2012-10-17", "Statement": [
        dict(ours["Statement"][2], Sid=""), dict(ours["Statement"][0], Action="s3:GetBucketLocation"),
        ours["Statement"][1]]}
    theirs["Statement"][0].pop("Sid")
    assert m.normalize_policy(json.dumps(theirs)) == m.normalize_policy(ours)
    assert m.normalize_policy(m.build_policy("readwrite", ["model-checkpoints"])) != m.normalize_policy(ours)


def _admin():
    clock = iter([NOW] * 10)
    return m.MinioAdmin(Endpoint("https://10.89.0.2:9000", "llmops-root", ROOT_SECRET, clock=lambda: next(clock)))


def test_canned_policy_requests():
    admin = _admin()
    policy = m.build_policy("readonly", ["model-checkpoints"])
    req = admin.add_canned_policy_request("llmops-serving-readonly", policy)
    assert (req.method, req.path, req.query) == ("PUT", "/minio/admin/v3/add-canned-policy", {"name": "llmops-serving-readonly"})
    assert json.loads(req.body) == policy
    info = admin.info_canned_policy_request("llmops-serving-readonly")
    assert (info.method, info.path, info.query) == ("GET", "/minio/admin/v3/info-canned-policy",
                                                    {"name": "llmops-serving-readonly", "v": "2"})


def test_signed_admin_request_carries_the_payload_hash_and_an_empty_region():
    admin = _admin()
    req = admin.add_canned_policy_request("p", m.build_policy("readonly", ["b1b"]))
    signed = admin.endpoint.build(req.method, req.path, req.query, req.body, req.headers, region="")
    assert signed.headers["host"] == "10.89.0.2:9000"
    assert signed.headers["x-amz-content-sha256"] == hashlib.sha256(req.body).hexdigest()
    assert signed.headers["x-amz-date"] == "20240102T030405Z"
    assert "Credential=llmops-root/20240102//s3/aws4_request," in signed.headers["authorization"]
    assert signed.target == "/minio/admin/v3/add-canned-policy?name=p"


def test_add_user_body_is_encrypted_with_the_admin_secret():
    req = _admin().set_user_request("model-engine", "u" * 40)
    assert (req.method, req.path, req.query) == ("PUT", "/minio/admin/v3/add-user", {"accessKey": "model-engine"})
    assert b"u" * 40 not in req.body
    assert json.loads(m.decrypt_data(ROOT_SECRET, req.body)) == {"secretKey": "u" * 40, "status": "enabled"}


def test_policy_attach_and_detach_requests():
    admin = m.MinioAdmin(Endpoint("https://h:9000", "root", ROOT_SECRET), api_version="v4")
    req = admin.policy_association_request(True, "llmops-serving", ["llmops-serving-readonly"])
    assert (req.method, req.path, req.headers) == ("POST", "/minio/admin/v4/idp/builtin/policy/attach",
                                                   {"Content-Type": "application/octet-stream"})
    assert json.loads(m.decrypt_data(ROOT_SECRET, req.body)) == {"policies": ["llmops-serving-readonly"], "user": "llmops-serving"}
    assert 204 in req.ok and 201 in req.ok
    assert admin.policy_association_request(False, "u", ["p"]).path.endswith("/policy/detach")


def test_user_info_request_and_policy_list():
    req = _admin().user_info_request("llmops-serving")
    assert (req.method, req.path, req.query) == ("GET", "/minio/admin/v3/user-info", {"accessKey": "llmops-serving"})
    assert m.user_policies({"policyName": "a, b,,c", "status": "enabled"}) == ["a", "b", "c"]
    assert m.user_policies(None) == []


def test_a_non_minio_server_is_named_as_such():
    admin = _admin()

    def call(*_args, **_kwargs):
        raise OnpremError("GET answered HTTP 404 NoSuchBucket", status=404, code="NoSuchBucket")
    admin.endpoint.call = call
    with pytest.raises(OnpremError, match="does not implement MinIO's admin API"):
        admin.get_user("model-engine")


POLICY = m.build_policy("readonly", ["model-checkpoints"])


@pytest.mark.parametrize("before, expected", [
    ({"policy": None, "user": None, "secret_ok": False},
     [("put_policy", "pol"), ("create_user", None), ("attach", ["pol"])]),
    ({"policy": POLICY, "user": {"status": "enabled", "policyName": "pol"}, "secret_ok": True}, []),
    ({"policy": POLICY, "user": {"status": "enabled", "policyName": "pol"}, "secret_ok": False},
     [("reset_user", "secret")]),
    ({"policy": POLICY, "user": {"status": "disabled", "policyName": "pol"}, "secret_ok": True},
     [("reset_user", "status")]),
    ({"policy": m.build_policy("readwrite", ["model-checkpoints"]), "user": {"status": "enabled", "policyName": "readwrite,pol"},
      "secret_ok": True},
     [("put_policy", "pol"), ("detach", ["readwrite"])]),
])
def test_plan_user(before, expected):
    assert m.plan_user(before, "pol", POLICY) == expected
