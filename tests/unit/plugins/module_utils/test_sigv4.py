"""_sigv4: SigV4 signing, pinned to AWS's published values and cross-checked with botocore."""
import datetime
import hashlib

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils import _sigv4

NOW = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("datestamp, expected", [
    # AWS documentation, "Examples of how to derive a signing key for Signature Version 4".
    ("20120215", "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"),
    # AWS documentation, "Create a signature" (the IAM ListUsers example of 2015-08-30).
    ("20150830", "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"),
])
def test_signing_key_matches_the_aws_documentation(datestamp, expected):
    assert _sigv4.signing_key(SECRET, datestamp, "us-east-1", "iam").hex() == expected


def test_canonical_request_layout_and_payload_hash():
    req = _sigv4.sign("put", "10.0.0.5:9000", "/minio/admin/v3/add-canned-policy", {"name": "p one"},
                      body=b"{}", access_key="root", secret_key="s" * 40, region="", now=NOW)
    lines = req.canonical_request.split("\n")
    assert lines[0] == "PUT"
    assert lines[1] == "/minio/admin/v3/add-canned-policy"
    assert lines[2] == "name=p%20one"
    assert lines[3:6] == ["host:10.0.0.5:9000", "x-amz-content-sha256:" + hashlib.sha256(b"{}").hexdigest(),
                          "x-amz-date:20240102T030405Z"]
    assert lines[7] == "host;x-amz-content-sha256;x-amz-date"
    assert lines[8] == hashlib.sha256(b"{}").hexdigest()
    assert req.headers["x-amz-content-sha256"] == lines[8]
    # An empty region gives MinIO's admin scope, exactly what madmin-go sends.
    assert req.string_to_sign.split("\n")[2] == "20240102//s3/aws4_request"
    assert req.headers["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=root/20240102//s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=")
    assert req.target == "/minio/admin/v3/add-canned-policy?name=p%20one"


def test_query_is_sorted_and_strictly_encoded():
    assert _sigv4.canonical_query({"b": "x y", "a": "1/2+3", "location": ""}) == "a=1%2F2%2B3&b=x%20y&location="
    assert _sigv4.canonical_query([("v", "2"), ("name", "pol~icy")]) == "name=pol~icy&v=2"


def test_path_keeps_slashes_and_encodes_the_rest():
    req = _sigv4.sign("GET", "h", "/bucket/a key+b", now=NOW, access_key="a", secret_key="b")
    assert req.canonical_request.split("\n")[1] == "/bucket/a%20key%2Bb"
    assert req.target == "/bucket/a%20key%2Bb"


@pytest.mark.parametrize("method, path, query, body, region", [
    ("GET", "/", {}, b"", "us-east-1"),
    ("GET", "/llm-engine", {"location": ""}, b"", "us-east-1"),
    ("PUT", "/model-checkpoints", {}, b"<CreateBucketConfiguration/>", "eu-central-1"),
    ("POST", "/minio/admin/v3/idp/builtin/policy/attach", {}, b"\x00\x01binary", "us-east-1"),
    ("GET", "/minio/admin/v3/user-info", {"accessKey": "model-engine"}, b"", "us-east-1"),
])
def test_signature_equals_botocore(method, path, query, body, region):
    botocore_auth = pytest.importorskip("botocore.auth")
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    ours = _sigv4.sign(method, "10.89.0.2:9000", path, query, {"Content-Type": "application/octet-stream"},
                       body, "AKIDEXAMPLE", SECRET, region, now=NOW)
    headers = dict((k, v) for k, v in ours.headers.items() if k != "authorization")
    request = AWSRequest(method=method, url="https://10.89.0.2:9000" + ours.target, data=body, headers=headers)
    request.context["timestamp"] = "20240102T030405Z"
    auth = botocore_auth.S3SigV4Auth(Credentials("AKIDEXAMPLE", SECRET), "s3", region)
    canonical = auth.canonical_request(request)
    assert canonical == ours.canonical_request
    assert auth.signature(auth.string_to_sign(request, canonical), request) == ours.signature
