"""A real registry for tests: Debian's docker-registry (distribution 2.8) run as the test's own process on
127.0.0.1:<free port>, TLS with a certificate from a throwaway CA, htpasswd (bcrypt) auth, storage in a
temporary directory. Used by tests/integration/mirror and tests/integration/cluster/test_image_mirror.py."""
import datetime
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import time

import bcrypt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PUSH_USER, PULL_USER = "pusher", "puller"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pki(d, host_ip="127.0.0.1"):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmops mirror test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host_ip)),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "registry.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "registry.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (d / "registry.key").chmod(0o600)


class Reg(object):
    """A running registry: host, CA file, users; small API helpers for assertions."""

    def __init__(self, d, port, passwords):
        self.dir, self.port, self.passwords = d, port, passwords
        self.host = "127.0.0.1:%d" % port
        self.ca = str(d / "ca.crt")
        self.proc = None

    def start(self):
        self.log = open(self.dir / "registry.log", "ab")
        self.proc = subprocess.Popen([shutil.which("docker-registry") or "/usr/bin/docker-registry", "serve",
                                      str(self.dir / "config.yml")], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                r = requests.get("https://%s/v2/" % self.host, verify=self.ca, timeout=2)
                if r.status_code == 401:
                    return self
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError("docker-registry did not start: %s" % (self.dir / "registry.log").read_text()[-2000:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()

    def api(self, method, path, user=PULL_USER, **kw):
        return requests.request(method, "https://%s%s" % (self.host, path), verify=self.ca,
                                auth=(user, self.passwords[user]), timeout=60, **kw)

    def manifest_digest(self, repository, reference):
        r = self.api("HEAD", "/v2/%s/manifests/%s" % (repository, reference), headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"})
        return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None

    def has_blob(self, repository, digest):
        return self.api("HEAD", "/v2/%s/blobs/%s" % (repository, digest)).status_code == 200

    def module_args(self, layout, **kw):
        args = dict(layout=str(layout), registry=self.host, username=PUSH_USER, password=self.passwords[PUSH_USER],
                    ca_path=self.ca)
        args.update(kw)
        return args


def start_registry(d):
    """Create CA, certificate, htpasswd and config under d; start the registry; return a Reg."""
    d.mkdir(parents=True, exist_ok=True)
    make_pki(d)
    passwords = {PUSH_USER: "push-" + os.urandom(12).hex(), PULL_USER: "pull-" + os.urandom(12).hex()}
    with open(d / "htpasswd", "w") as f:
        for user, pw in passwords.items():
            f.write("%s:%s\n" % (user, bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=5)).decode()))
    port = free_port()
    (d / "storage").mkdir()
    (d / "config.yml").write_text(json.dumps({
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(d / "storage")}, "delete": {"enabled": True}},
        "http": {"addr": "127.0.0.1:%d" % port, "secret": os.urandom(16).hex(),
                 "tls": {"certificate": str(d / "registry.crt"), "key": str(d / "registry.key")}},
        "auth": {"htpasswd": {"realm": "llmops-test", "path": str(d / "htpasswd")}}}))
    return Reg(d, port, passwords).start()
