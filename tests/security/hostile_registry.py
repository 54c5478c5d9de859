"""A hostile container registry for the security suite: HTTPS on 127.0.0.1 (a throwaway self-signed
certificate for IP 127.0.0.1), a random port, plus a second origin (another loopback port) that records
every request and whether an Authorization header came with it.

Modes (set before the run):
  location_elsewhere  POST /v2/<repo>/blobs/uploads/ answers a Location on the other origin
  token_answer        (status, content type, body), status not 0: the registry asks for a Bearer token from its own
                      /token, which answers this instead of a token
Otherwise it behaves: Basic auth (any user), uploads on its own origin, manifests kept and served back.
"""
import datetime
import hashlib
import http.server
import ssl
import threading
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import ipaddress


def make_cert(d):
    """(cert file, key file) of a self-signed certificate for 127.0.0.1: the CA file the client trusts too."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile registry")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = d / "hostile.crt", d / "hostile.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


class _Server(object):
    def __init__(self, handler, cert, key):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class HostileRegistry(object):
    def __init__(self, d):
        self.cert, key = make_cert(d)
        self.location_elsewhere = False
        self.token_answer = (0, "", b"")   # status 0: a Basic registry, no token service
        self.requests = []        # (method, path, Authorization sent?) on the registry
        self.elsewhere = []       # the same on the other origin
        self.manifests = {}       # (repository, reference) -> (media type, bytes)
        self.lock = threading.Lock()
        reg = self

        class Base(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, headers=None, body=b""):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and self.command != "HEAD":
                    self.wfile.write(body)

            def body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

        class Elsewhere(Base):
            def handle_any(self):
                self.body()
                with reg.lock:
                    reg.elsewhere.append((self.command, self.path, "Authorization" in self.headers))
                self.reply(202, {"Location": self.path.split("?", 1)[0], "Range": "0-0"})
            do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any

        class Registry(Base):
            def handle_any(self):
                data = self.body()
                path = self.path.split("?", 1)[0]
                with reg.lock:
                    reg.requests.append((self.command, self.path, "Authorization" in self.headers))
                if path == "/token":
                    status, ctype, body = reg.token_answer
                    return self.reply(status, {"Content-Type": ctype}, body)
                if "Authorization" not in self.headers:
                    if reg.token_answer[0]:
                        challenge = 'Bearer realm="https://127.0.0.1:%d/token",service="hostile"' % reg.port
                    else:
                        challenge = 'Basic realm="hostile"'
                    return self.reply(401, {"WWW-Authenticate": challenge})
                if path == "/v2/":
                    return self.reply(200)
                repo, _sep, rest = path[len("/v2/"):].partition("/blobs/")
                if _sep:
                    if self.command == "HEAD":
                        return self.reply(404)
                    if self.command == "POST":
                        where = "/v2/%s/blobs/uploads/%s" % (repo, uuid.uuid4().hex)
                        if reg.location_elsewhere:
                            where = "https://127.0.0.1:%d%s" % (reg.other.port, where)
                        return self.reply(202, {"Location": where, "Range": "0-0"})
                    if self.command == "PATCH":
                        return self.reply(202, {"Location": path, "Range": "0-%d" % (len(data) - 1)})
                    if self.command == "PUT":
                        return self.reply(201)
                    if self.command == "GET":
                        return self.reply(404)
                repo, _sep, ref = path[len("/v2/"):].partition("/manifests/")
                if _sep:
                    if self.command == "PUT":
                        with reg.lock:
                            reg.manifests[(repo, ref)] = (self.headers.get("Content-Type"), data)
                        digest = "sha256:" + hashlib.sha256(data).hexdigest()
                        with reg.lock:
                            reg.manifests[(repo, digest)] = (self.headers.get("Content-Type"), data)
                        return self.reply(201, {"Docker-Content-Digest": digest})
                    got = reg.manifests.get((repo, ref))
                    if got is None:
                        return self.reply(404)
                    return self.reply(200, {"Content-Type": got[0],
                                            "Docker-Content-Digest": "sha256:" + hashlib.sha256(got[1]).hexdigest()},
                                      got[1])
                return self.reply(404)
            do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any

        self.other = _Server(Elsewhere, self.cert, key)
        self.main = _Server(Registry, self.cert, key)
        self.port = self.main.port
        self.host = "127.0.0.1:%d" % self.port

    def stop(self):
        self.main.stop()
        self.other.stop()
