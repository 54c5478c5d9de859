"""_s3_endpoint's transport, the one S3 client of the collection and of the model-pull image (issue 13 item 3: no
helper written twice). Against a real HTTP/1.1 server on loopback: kept connections (one per thread), a kept
connection the server closed while idle replaced once, a request on a fresh connection never sent twice, a
streamed answer, an unusable CA file. Then the model-pull image's layout: the script with exactly the files
serving/images/build.sh puts beside it, run without site-packages (so without the collection), uses this client."""
import hashlib
import http.server
import importlib.util
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils import _retry
from ansible_collections.llmops.onprem.plugins.module_utils._s3_endpoint import Endpoint, OnpremError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
BODY = b"x" * 1000


class Loopback(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """An HTTP server on 127.0.0.1, a free port, serving from a thread until stop()."""
    daemon_threads = True

    def __init__(self, handler):
        self.lock = threading.Lock()
        super(Loopback, self).__init__(("127.0.0.1", 0), handler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]

    def stop(self):
        self.shutdown()
        self.server_close()


class Server(Loopback):
    def __init__(self, mode):
        self.mode = mode            # "keep": HTTP/1.1 keep-alive; "close": closes after each answer, saying nothing;
        self.connections = 0        # "drop": closes every connection without an answer
        self.requests = 0
        super(Server, self).__init__(Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super(Handler, self).setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass

    def do_GET(self):  # pylint: disable=invalid-name
        with self.server.lock:
            self.server.requests += 1
        if self.server.mode == "drop":
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
        self.wfile.flush()
        if self.server.mode == "close":
            self.close_connection = True


@pytest.fixture
def server(request):
    s = Server(request.param if hasattr(request, "param") else "keep")
    yield s
    s.stop()


def get(endpoint):
    return endpoint.send(endpoint.build("GET", "/bucket/key"))


@pytest.mark.parametrize("server", ["keep"], indirect=True)
def test_kept_connections_one_per_thread(server):
    kept = Endpoint(server.url, "a", "s", keep_alive=True)
    for _i in range(5):
        assert get(kept)[0] == 200
    assert (server.connections, server.requests) == (1, 5)
    threads = [threading.Thread(target=lambda: [get(kept) for _j in range(3)]) for _k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (server.connections, server.requests) == (3, 11)


@pytest.mark.parametrize("server", ["keep"], indirect=True)
def test_without_keep_alive_each_request_has_its_connection(server):
    plain = Endpoint(server.url, "a", "s")
    for _i in range(3):
        assert get(plain)[2] == BODY
    assert (server.connections, server.requests) == (3, 3)


@pytest.mark.parametrize("server", ["close"], indirect=True)
def test_a_kept_connection_closed_while_idle_is_replaced_once(server):
    """The store closed the idle connection (a keep-alive timeout) without saying so: the next request goes out
    again on a new connection, at once; the caller sees only answers."""
    kept = Endpoint(server.url, "a", "s", keep_alive=True, retries=0)
    for _i in range(3):
        assert get(kept)[2] == BODY
    assert (server.connections, server.requests) == (3, 3)


@pytest.mark.parametrize("server", ["drop"], indirect=True)
def test_a_fresh_connection_that_drops_is_an_error_and_not_sent_twice(server):
    kept = Endpoint(server.url, "a", "s", keep_alive=True, retries=0)
    with pytest.raises(OnpremError) as e:
        get(kept)
    assert e.value.kind == "unreachable"
    assert str(e.value).startswith("cannot connect to %s: " % server.url)
    assert server.requests == 1
    # The cause is kept: the retry helper tells a transient failure by it (a caller's own retry decides).
    assert _retry.transient_exception(e.value)


@pytest.mark.parametrize("server", ["keep"], indirect=True)
def test_open_streams_the_answer_and_discard_drops_the_connection(server):
    kept = Endpoint(server.url, "a", "s", keep_alive=True)
    resp = kept.open("GET", "/bucket/key", headers={"range": "bytes=0-9"})
    assert resp.status == 200 and resp.read(10) == BODY[:10]
    kept.discard()                  # the rest left unread: the connection cannot carry another request
    resp = kept.open("GET", "/bucket/key")
    assert resp.read() == BODY      # read whole: the connection is kept
    assert get(kept)[2] == BODY
    assert (server.connections, server.requests) == (2, 3)


def test_an_unusable_ca_file_is_an_input_error_with_its_cause(tmp_path):
    missing = str(tmp_path / "site-ca.pem")
    endpoint = Endpoint("https://127.0.0.1:1", "a", "s", ca_path=missing)
    with pytest.raises(OnpremError) as e:
        get(endpoint)
    assert e.value.kind == "input"
    assert str(e.value).startswith("the CA file %s cannot be used: " % missing)
    assert isinstance(e.value.__cause__, FileNotFoundError)


def _model_pull():
    spec = importlib.util.spec_from_file_location("model_pull_transport", os.path.join(ROOT, "serving", "model-pull", "model_pull.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_model_pull_uses_the_collection_client(tmp_path):
    mod = _model_pull()
    assert issubclass(mod.S3, mod._s3_endpoint.Endpoint)  # pylint: disable=protected-access
    with pytest.raises(mod.PullError) as e:
        mod.S3("https://127.0.0.1:1", "a", "s", ca_file=str(tmp_path / "none.pem"))
    assert e.value.code == mod.EXIT_USAGE
    assert str(e.value).startswith("--ca-file %s cannot be used: [Errno 2]" % (tmp_path / "none.pem"))
    with pytest.raises(mod.PullError) as e:
        mod.S3("http://127.0.0.1:1/path", "a", "s")
    assert e.value.code == mod.EXIT_USAGE and "must look like https://host:port (no path)" in str(e.value)


def test_one_s3_signer_and_transport():
    """Only _s3_endpoint signs S3 requests and opens their connections, in plugins/ and in model-pull."""
    signers, connections = set(), set()
    for top in ("plugins", os.path.join("serving", "model-pull")):
        for d, _dirs, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(d, name)
                    with open(path, encoding="utf-8") as fh:
                        text = fh.read()
                    rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
                    if "_sigv4.sign(" in text:
                        signers.add(rel)
                    if "HTTPConnection(" in text and "s3" in rel.lower():
                        connections.add(rel)
    assert signers == {"plugins/module_utils/_s3_endpoint.py"}
    assert connections == {"plugins/module_utils/_s3_endpoint.py"}


# The image runs Debian 12's python3 (3.11, the one at /usr/bin/python3 on this machine's kind) and the checkout's
# tests run the venv's: both, where there.
INTERPRETERS = sorted(set([sys.executable] + [p for p in ["/usr/bin/python3.11"] if os.path.exists(p)]))


@pytest.mark.parametrize("python", INTERPRETERS)
def test_the_model_pull_image_layout_runs_alone(tmp_path, python):
    """The files serving/images/build.sh installs beside the script, and nothing else: run with no site-packages
    (-S: the collection is not importable there), the script imports them and reports an unreachable store with
    the client's words and exit 7."""
    with open(os.path.join(ROOT, "serving", "images", "build.sh"), encoding="utf-8") as fh:
        shipped = re.findall(r'install -m 0644 "\$REPO/plugins/module_utils/(_\w+\.py)" "\$stage/\1"', fh.read())
    assert "_s3_endpoint.py" in shipped and "_sigv4.py" in shipped
    for name in shipped:
        shutil.copy(os.path.join(ROOT, "plugins", "module_utils", name), str(tmp_path / name))
    shutil.copy(os.path.join(ROOT, "serving", "model-pull", "model_pull.py"), str(tmp_path / "model_pull.py"))
    env = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s", "PATH": os.environ.get("PATH", "")}
    proc = subprocess.run([python, "-I", "-S", str(tmp_path / "model_pull.py"), "--endpoint", "http://127.0.0.1:9",
                           "--bucket", "b", "--prefix", "p", "--model", "m", "--digest", "0" * 64,
                           "--cache-root", str(tmp_path / "cache")],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    assert "cannot connect to http://127.0.0.1:9: " in proc.stderr
    assert "Traceback" not in proc.stderr


class RangedStore(Loopback):
    """A plain-HTTP store that answers ranged GETs of its objects (HTTP/1.1, kept connections), and drops the
    connection without an answer to the first ``drops`` GETs of ``flaky`` (every one with drops=None)."""

    def __init__(self, objects, flaky, drops):
        self.objects, self.flaky, self.drops = objects, flaky, drops
        self.dropped = 0
        self.served = []
        super(RangedStore, self).__init__(RangedHandler)


class RangedHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass

    def do_GET(self):  # pylint: disable=invalid-name
        key = self.path.split("?", 1)[0].split("/", 2)[2]
        store = self.server
        with store.lock:
            drop = key == store.flaky and (store.drops is None or store.dropped < store.drops)
            if drop:
                store.dropped += 1
        if drop:
            self.close_connection = True
            return
        data = store.objects.get(key)
        if data is None:
            body = b"<Error><Code>NoSuchKey</Code></Error>"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        first, last = 0, len(data) - 1
        m = re.match(r"bytes=(\d+)-(\d+)$", self.headers.get("Range") or "")
        if m:
            first, last = int(m.group(1)), min(int(m.group(2)), len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (first, last, len(data)))
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        self.wfile.write(data[first:last + 1])
        with store.lock:
            store.served.append((key, first, last))


def _flaky_pull(tmp_path, monkeypatch, drops):
    """model-pull, in process, of a 3-chunk file from a RangedStore whose object GETs drop ``drops`` times; the
    retry helper's waits made 0 (the tries are counted, not timed)."""
    from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint
    mod = _model_pull()
    monkeypatch.setattr(mod, "CHUNK", 64 << 10)
    monkeypatch.setattr(mod._retry, "delay", lambda *a, **k: 0)  # pylint: disable=protected-access
    weights = os.urandom((64 << 10) * 2 + 1000)
    manifest = _checkpoint.build_manifest("demo", [dict(path="model.safetensors", size=len(weights),
                                                        sha256=hashlib.sha256(weights).hexdigest())])
    digest = hashlib.sha256(_checkpoint.canonical_bytes(manifest)).hexdigest()
    store = RangedStore({"demo/v1/" + _checkpoint.MANIFEST_KEY: _checkpoint.canonical_bytes(manifest),
                         "demo/v1/model.safetensors": weights}, "demo/v1/model.safetensors", drops)
    cache = tmp_path / "cache"
    try:
        rc = mod.main(["--endpoint", store.url, "--bucket", "models", "--prefix", "demo/v1", "--model", "demo",
                       "--digest", digest, "--cache-root", str(cache), "--parallel", "2"],
                      env=dict(AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="s"))
    finally:
        store.stop()
    return rc, store, cache / "demo" / digest, weights


def test_model_pull_sends_a_dropped_ranged_get_again(tmp_path, monkeypatch):
    """The store drops the first two ranged GETs without an answer (a restarting store, a proxy's reset): each is
    tried again, and the file is whole and verified."""
    rc, store, dest, weights = _flaky_pull(tmp_path, monkeypatch, drops=2)
    assert rc == 0
    assert store.dropped == 2
    assert sorted(s[1] for s in store.served if s[0].endswith(".safetensors")) == [0, 64 << 10, 128 << 10]
    assert (dest / "model.safetensors").read_bytes() == weights
    assert (dest / ".llmops-verified.json").exists()


def test_model_pull_gives_up_after_four_tries_and_publishes_nothing(tmp_path, monkeypatch, capsys):
    rc, store, dest, _weights = _flaky_pull(tmp_path, monkeypatch, drops=None)
    err = capsys.readouterr().err
    assert rc == 7, err
    assert "model-pull: ERROR: cannot connect to %s: " % store.url in err
    assert 4 <= store.dropped <= 4 * 3        # 4 tries of a chunk; the other chunks stop when one fails
    assert not (dest / "model.safetensors").exists() and not (dest / ".llmops-verified.json").exists()
