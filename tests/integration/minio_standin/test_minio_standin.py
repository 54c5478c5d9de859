"""The MinIO stand-in (tests/stand-ins/minio-standin) on 127.0.0.1 with a temporary volume and a throwaway CA,
driven by the real llmops.onprem.minio_user module (`ansible localhost -m`) and by boto3 over verified TLS:
the admin API subset the role uses, its records, and the S3 proxy to `rclone serve s3` in front of which it sits.
The stand-in is what the molecule services scenario and the demo lab install as the MinIO binary."""
import datetime
import hashlib
import http.client
import io
import ipaddress
import json
import os
import select
import ssl
import subprocess
import sys
import threading
import time

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
STANDIN = os.path.join(ROOT_DIR, "tests", "stand-ins", "minio-standin")
VENV_BIN = os.path.dirname(sys.executable)
ROOT = ("llmops-root", "root-secret-0123456789abcdefghij")
RW = ("llmops-rw", "rw-secret-0123456789abcdefghijklmn")
RO = ("llmops-ro", "ro-secret-0123456789abcdefghijklmn")
BUCKETS = ("llm-engine", "model-checkpoints")


def make_pki(d):
    """A throwaway CA and a certificate for 127.0.0.1 in MinIO's certs-dir layout."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "minio stand-in test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "minio")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    d.mkdir()
    (d / "CAs").mkdir()
    (d / "CAs" / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "public.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "private.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    (d / "private.key").chmod(0o600)
    return str(d / "CAs" / "ca.crt")


class StandIn(object):
    """The stand-in as its own process: started with MinIO's command line, ready when it logs its address."""

    def __init__(self, base):
        self.base = base
        self.volume = base / "data"
        self.volume.mkdir()
        self.certs = base / "certs"
        self.ca = make_pki(self.certs)
        self.proc, self.lines, self.url, self.port = None, [], None, 0

    def env(self):
        return dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ["PATH"],
                    MINIO_ROOT_USER=ROOT[0], MINIO_ROOT_PASSWORD=ROOT[1])

    def start(self):
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, STANDIN, "server", "--address", "127.0.0.1:%d" % self.port,
             "--console-address", "127.0.0.1:0", "--certs-dir", str(self.certs), str(self.volume)],
            env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            # Unbuffered: select() below watches the pipe itself, so readline() must not take a second line into a
            # buffer select() cannot see (the rclone line and "NOT MinIO;" arriving together hung a start for 60 s).
            bufsize=0)
        deadline = time.monotonic() + 60
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stderr], [], [], left)[0]:
                raise RuntimeError("the stand-in did not start in 60 s: %s" % self.lines)
            line = self.proc.stderr.readline().decode()
            if not line:
                raise RuntimeError("the stand-in exited with %s: %s" % (self.proc.wait(), self.lines))
            self.lines.append(line)
            if "NOT MinIO;" in line:
                self.port = int(line.split(" on 127.0.0.1:", 1)[1].split(" ", 1)[0])
                self.url = "https://127.0.0.1:%d" % self.port
                break
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        return self

    def _drain(self, proc):
        for line in iter(proc.stderr.readline, b""):
            self.lines.append(line.decode())

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def client(self, key):
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=key[0], aws_secret_access_key=key[1],
                            region_name="us-east-1", verify=self.ca,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def iam(self):
        return json.loads((self.volume / ".minio-standin" / "iam.json").read_text())


@pytest.fixture
def standin(tmp_path):
    server = StandIn(tmp_path).start()
    yield server
    server.stop()
    assert not [x for x in server.lines if "Traceback" in x], "".join(server.lines)


def module(name, args):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT_DIR, "ansible.cfg"), NO_COLOR="1",
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT_DIR, ".cache", "collections"),
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, PATH=VENV_BIN + os.pathsep + os.environ["PATH"])
    p = subprocess.run([os.path.join(VENV_BIN, "ansible"), "localhost", "-m", "llmops.onprem." + name, "-a", json.dumps(args),
                        "-o"], check=False, capture_output=True, text=True, env=env, cwd=ROOT_DIR, timeout=300)
    lines = [x for x in (p.stdout + p.stderr).splitlines() if "=>" in x]
    assert lines, p.stdout + p.stderr
    return p.returncode, json.loads(lines[-1].split("=>", 1)[1])


def user_args(server, key, access, resources, admin=ROOT):
    return dict(endpoint_url=server.url, ca_path=server.ca, region="us-east-1", access_key=admin[0], secret_key=admin[1],
                name=key[0], secret=key[1], policy_name="llmops-%s-%s" % (key[0], access), access=access,
                resources=resources)


RW_RESOURCES = list(BUCKETS)
RO_RESOURCES = ["model-checkpoints", "llm-engine/fine_tuned_weights"]


def create_buckets(server):
    rc, result = module("s3_buckets", dict(endpoint_url=server.url, ca_path=server.ca, region="us-east-1",
                                           access_key=ROOT[0], secret_key=ROOT[1], names=list(BUCKETS)))
    assert rc == 0, result


def test_minio_user_creates_users_that_work_and_reruns_unchanged(standin):
    create_buckets(standin)
    for key, access, resources in ((RW, "readwrite", RW_RESOURCES), (RO, "readonly", RO_RESOURCES)):
        rc, result = module("minio_user", user_args(standin, key, access, resources))
        assert rc == 0 and result["changed"], (result, "".join(standin.lines[-20:]))
        assert result["actions"] == ["put_policy", "create_user", "attach"]
        # The stand-in records policies but enforces none, and the module says so.
        assert result["policy_enforced"] is False
        assert key[1] not in json.dumps(result)

    iam = standin.iam()
    assert {k: (u["status"], u["policies"]) for k, u in iam["users"].items()} == {
        RW[0]: ("enabled", ["llmops-llmops-rw-readwrite"]), RO[0]: ("enabled", ["llmops-llmops-ro-readonly"])}
    assert sorted(iam["policies"]) == ["llmops-llmops-ro-readonly", "llmops-llmops-rw-readwrite"]
    assert iam["policies"]["llmops-llmops-ro-readonly"]["Statement"][-1]["Action"] == ["s3:GetObject"]
    assert (standin.volume / ".minio-standin" / "iam.json").stat().st_mode & 0o777 == 0o600
    assert (standin.volume / ".minio-standin").stat().st_mode & 0o777 == 0o700

    rw, ro = standin.client(RW), standin.client(RO)
    rw.put_object(Bucket="model-checkpoints", Key="m/a.bin", Body=b"written by the read-write key")
    assert ro.get_object(Bucket="model-checkpoints", Key="m/a.bin")["Body"].read() == b"written by the read-write key"
    assert [o["Key"] for o in ro.list_objects_v2(Bucket="model-checkpoints")["Contents"]] == ["m/a.bin"]

    # The stand-in's records are not reachable through S3, even with the root key.
    root = standin.client(ROOT)
    assert sorted(b["Name"] for b in root.list_buckets()["Buckets"]) == sorted(BUCKETS)
    with pytest.raises(ClientError) as e:
        root.get_object(Bucket=".minio-standin", Key="iam.json")
    assert e.value.response["Error"]["Code"] in ("NoSuchBucket", "InvalidBucketName")

    # Idempotent, and the same after a restart (the users come back from iam.json).
    for restart in (False, True):
        if restart:
            standin.stop()
            standin.start()
        for key, access, resources in ((RW, "readwrite", RW_RESOURCES), (RO, "readonly", RO_RESOURCES)):
            rc, result = module("minio_user", user_args(standin, key, access, resources))
            assert rc == 0 and not result["changed"] and result["actions"] == [], result
    assert standin.client(RO).get_object(Bucket="model-checkpoints", Key="m/a.bin")["Body"].read().startswith(b"written")


def test_a_changed_secret_is_reset_and_the_old_one_refused(standin):
    create_buckets(standin)
    rc, result = module("minio_user", user_args(standin, RO, "readonly", RO_RESOURCES))
    assert rc == 0 and result["changed"]
    new = (RO[0], "another-secret-0123456789abcdef")
    rc, result = module("minio_user", user_args(standin, new, "readonly", RO_RESOURCES))
    assert rc == 0 and result["actions"] == ["reset_user"], result
    assert standin.client(new).list_objects_v2(Bucket="model-checkpoints").get("Contents", []) == []
    with pytest.raises(ClientError) as e:
        standin.client(RO).list_objects_v2(Bucket="model-checkpoints")
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_wrong_secrets_and_other_users_are_refused(standin):
    create_buckets(standin)
    rc, result = module("minio_user", user_args(standin, RW, "readwrite", RW_RESOURCES))
    assert rc == 0 and result["changed"]
    # S3 through the proxy: rclone checks the signature.
    with pytest.raises(ClientError) as e:
        standin.client((RW[0], "not-the-secret-0123456789")).put_object(Bucket="llm-engine", Key="x", Body=b"x")
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    # Admin API: the stand-in checks the signature, and answers the root credential only.
    rc, result = module("minio_user", user_args(standin, RO, "readonly", RO_RESOURCES, admin=(ROOT[0], "wrong-root-secret")))
    assert rc != 0 and result.get("error_code") == "SignatureDoesNotMatch", result
    rc, result = module("minio_user", user_args(standin, RO, "readonly", RO_RESOURCES, admin=RW))
    assert rc != 0 and result.get("error_code") == "AccessDenied", result
    rc, result = module("minio_user", user_args(standin, RO, "readonly", RO_RESOURCES, admin=("nobody", "nobody-secret-0123")))
    assert rc != 0 and result.get("error_code") == "InvalidAccessKeyId", result
    # Nothing was half-done by the refused calls.
    assert sorted(standin.iam()["users"]) == [RW[0]]
    assert sorted(standin.iam()["policies"]) == ["llmops-llmops-rw-readwrite"]


def test_large_objects_stream_intact_through_the_proxy(standin):
    create_buckets(standin)
    rw = standin.client(ROOT)
    body = os.urandom(6 * 1024 * 1024 + 123)
    # Over TLS boto3 sends this body chunked (aws-chunked, checksum trailer): the stand-in de-chunks it for rclone.
    rw.put_object(Bucket="llm-engine", Key="big/one.bin", Body=body)
    got = rw.get_object(Bucket="llm-engine", Key="big/one.bin")
    assert got["ContentLength"] == len(body)
    assert hashlib.sha256(got["Body"].read()).hexdigest() == hashlib.sha256(body).hexdigest()
    # Multipart (three parts), as checkpoint_sync uploads.
    big = os.urandom(13 * 1024 * 1024)
    rw.upload_fileobj(io.BytesIO(big), "llm-engine", "big/multi.bin",
                      Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024))
    out = io.BytesIO()
    rw.download_fileobj("llm-engine", "big/multi.bin", out)
    assert hashlib.sha256(out.getvalue()).hexdigest() == hashlib.sha256(big).hexdigest()
    # A ranged read.
    part = rw.get_object(Bucket="llm-engine", Key="big/one.bin", Range="bytes=1000-1999")["Body"].read()
    assert part == body[1000:2000]
    # Keep-alive: several requests and answers (unsigned, so refused) over one connection.
    conn = http.client.HTTPSConnection("127.0.0.1", standin.port, timeout=30,
                                       context=ssl.create_default_context(cafile=standin.ca))
    for method in ("GET", "HEAD", "GET"):
        conn.request(method, "/llm-engine/big/one.bin")
        r = conn.getresponse()
        r.read()
        assert r.status in (400, 403) and not r.will_close, (method, r.status, r.getheaders())
    conn.close()


def test_the_command_line_and_version(tmp_path):
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ["PATH"], MINIO_ROOT_USER=ROOT[0],
               MINIO_ROOT_PASSWORD=ROOT[1])
    p = subprocess.run([sys.executable, STANDIN, "--version"], capture_output=True, text=True, env=env, check=False)
    assert p.returncode == 0 and p.stdout.startswith("minio version STAND-IN (not MinIO;") and "rclone v" in p.stdout
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for argv, message in (
            (["server", str(tmp_path / "a"), str(tmp_path / "b")], "serves one volume directory"),
            (["server", "--address", "127.0.0.1:0"], "no volume given"),
            (["server", "--bogus", str(tmp_path / "a")], "unsupported option --bogus"),
            (["server", "http://host{1...4}/data"], "distributed or erasure-set"),
            (["serve"], "usage: minio server")):
        p = subprocess.run([sys.executable, STANDIN] + argv, capture_output=True, text=True, env=env, check=False, timeout=30)
        assert p.returncode == 1 and message in p.stderr, (argv, p.stderr)
    p = subprocess.run([sys.executable, STANDIN, "server", str(tmp_path / "a")], capture_output=True, text=True,
                       env=dict(env, MINIO_ROOT_PASSWORD="short"), check=False, timeout=30)
    assert p.returncode == 1 and "MINIO_ROOT_PASSWORD must be at least 8 characters" in p.stderr
    assert not (tmp_path / "a" / ".minio-standin").exists()


def load_standin():
    """The stand-in's code as a module (its file has no .py suffix: it is installed as the minio binary)."""
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("minio_standin", STANDIN)
    spec = importlib.util.spec_from_loader("minio_standin", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("size", [0, 100, 16 * 1024, 16 * 1024 + 1, 40 * 1024])
def test_its_decryption_reads_what_minio_user_encrypts(size):
    """The stand-in's libcrypto AES-GCM and sio framing against the module's (cryptography's) encryption,
    across the 16 KiB fragment boundary; a flipped byte or the wrong password is refused."""
    from ansible_collections.llmops.onprem.plugins.module_utils._minio_admin import encrypt_data
    standin = load_standin()
    crypto = standin.LibCrypto()
    plain = os.urandom(size)
    blob = encrypt_data(ROOT[1], plain)
    assert standin.madmin_decrypt(crypto, ROOT[1], blob) == plain
    for bad_blob, password in ((blob[:-1] + bytes([blob[-1] ^ 1]), ROOT[1]), (blob, "another-root-password")):
        with pytest.raises(ValueError):
            standin.madmin_decrypt(crypto, password, bad_blob)
    with pytest.raises(ValueError):
        standin.madmin_decrypt(crypto, ROOT[1], blob[:40])
