"""Run the real modules against an in-memory S3/MinIO-admin fake that replaces only the network
boundary (Endpoint.send). The fake checks every SigV4 signature and decrypts admin bodies with
the root secret, so a module that signs or encrypts wrongly fails here.

The fake's admin routes follow madmin-go/MinIO sources; they are not a MinIO server, and passing
here does not prove that real MinIO accepts the requests."""
import json
import re
from urllib.parse import parse_qsl

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.llmops.onprem.plugins.module_utils import _minio_admin, _s3_endpoint, _sigv4

ROOT = ("llmops-root", "R" * 40)


def _xml_error(status, code):
    return status, {}, ("<Error><Code>%s</Code><Message>%s</Message></Error>" % (code, code)).encode()


def _json_error(status, code):
    return status, {}, json.dumps({"Code": code, "Message": code}).encode()


class FakeStore(object):
    def __init__(self):
        self.buckets = set()
        self.foreign_buckets = set()
        self.policies = {}
        self.users = {}
        self.requests = []
        self.admin_api = True
        self.unreachable = False
        self.enforce_policies = False  # like real MinIO when True; like rclone serve s3 (the stand-in) when False

    def secret_of(self, access_key):
        if access_key == ROOT[0]:
            return ROOT[1]
        user = self.users.get(access_key)
        return user["secret"] if user and user["status"] == "enabled" else None

    def send(self, endpoint, req):
        if self.unreachable:
            raise _s3_endpoint.OnpremError("cannot connect to %s: [Errno 111] Connection refused" % endpoint.url,
                                           kind="unreachable")
        self.requests.append(req)
        auth = req.headers["authorization"]
        access_key, date, region = re.search(r"Credential=([^/]+)/(\d{8})/([^/]*)/s3/aws4_request", auth).groups()
        secret = self.secret_of(access_key)
        if secret is None:
            return _xml_error(403, "InvalidAccessKeyId")
        extra = dict((k, v) for k, v in req.headers.items()
                     if k not in ("host", "x-amz-date", "x-amz-content-sha256", "authorization"))
        import datetime
        now = datetime.datetime.strptime(req.headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
        again = _sigv4.sign(req.method, req.headers["host"], req.path, parse_qsl(req.query_string, keep_blank_values=True),
                            extra, req.body, access_key, secret, region, now=now)
        if again.signature != req.signature or req.headers["x-amz-content-sha256"] != again.headers["x-amz-content-sha256"]:
            return _xml_error(403, "SignatureDoesNotMatch")
        query = dict(parse_qsl(req.query_string, keep_blank_values=True))
        if req.path.startswith("/minio/admin/"):
            if not self.admin_api:
                return _xml_error(404, "NoSuchBucket")
            if access_key != ROOT[0]:
                return _json_error(403, "AccessDenied")
            return self.admin(req, req.path.split("/", 4)[4], query)
        bucket = req.path.strip("/")
        if req.method == "GET" and not bucket:
            names = "".join("<Bucket><Name>%s</Name></Bucket>" % b for b in sorted(self.buckets))
            return 200, {}, ("<ListAllMyBucketsResult><Buckets>%s</Buckets></ListAllMyBucketsResult>" % names).encode()
        if bucket in self.foreign_buckets or (self.enforce_policies and access_key != ROOT[0]
                                              and not self.grants_bucket(access_key, bucket)):
            return _xml_error(403, "AccessDenied")
        if req.method == "GET" and "location" in query:
            return (200, {}, b"<LocationConstraint/>") if bucket in self.buckets else _xml_error(404, "NoSuchBucket")
        if req.method == "PUT":
            self.buckets.add(bucket)
            return 200, {}, b""
        return _xml_error(400, "NotImplemented")

    def grants_bucket(self, access_key, bucket):
        """Whether a policy attached to the user names the bucket or objects in it (a coarse check)."""
        resources = [r for name in self.users[access_key]["policies"] for st in self.policies.get(name, {}).get("Statement", [])
                     for r in st["Resource"]]
        return any(r.split(":::", 1)[1].split("/", 1)[0] == bucket for r in resources)

    def admin(self, req, op, query):
        if op == "info-canned-policy":
            if query["name"] not in self.policies:
                return _json_error(404, "XMinioAdminNoSuchPolicy")
            return 200, {}, json.dumps({"PolicyName": query["name"], "Policy": self.policies[query["name"]]}).encode()
        if op == "add-canned-policy":
            self.policies[query["name"]] = json.loads(req.body)
            return 200, {}, b""
        if op == "user-info":
            user = self.users.get(query["accessKey"])
            if user is None:
                return _json_error(404, "XMinioAdminNoSuchUser")
            return 200, {}, json.dumps({"policyName": ",".join(user["policies"]), "status": user["status"]}).encode()
        if op == "add-user":
            body = json.loads(_minio_admin.decrypt_data(ROOT[1], req.body))
            user = self.users.setdefault(query["accessKey"], {"policies": []})
            user.update(secret=body["secretKey"], status=body["status"])
            return 200, {}, b""
        if op.startswith("idp/builtin/policy/"):
            body = json.loads(_minio_admin.decrypt_data(ROOT[1], req.body))
            user = self.users[body["user"]]
            if op.endswith("attach"):
                user["policies"] += [p for p in body["policies"] if p not in user["policies"]]
            else:
                user["policies"] = [p for p in user["policies"] if p not in body["policies"]]
            return 204, {}, b""
        return _json_error(400, "XMinioAdminUnknown")


@pytest.fixture
def store(monkeypatch):
    fake = FakeStore()

    def send(endpoint, req):
        return fake.send(endpoint, req)
    monkeypatch.setattr(_s3_endpoint.Endpoint, "send", send)
    return fake


@pytest.fixture
def run_module_out(capsys):
    """Run a module's main() with these args: (its JSON result, everything it printed)."""
    def run(module, args):
        with patch_module_args(args):
            with pytest.raises(SystemExit):
                module.main()
        out = capsys.readouterr().out
        return json.loads(out), out
    return run


@pytest.fixture
def run_module(run_module_out):
    """Run a module's main() with these args: its JSON result."""
    def run(module, args):
        return run_module_out(module, args)[0]
    return run
