"""Issue 14 item 14: endpoint_ready against a hostile "engine" on loopback. An answer with an
endless or huge body must be refused after at most 1 MiB, with a message that says so, in bounded
memory (the module runs in a measured child process); an API key sent over plain http:// is
warned about. endpoint_ready writes nothing: the child's HOME and TMPDIR stay as they were."""
import http.server
import json
import socketserver
import threading

import pytest

from conftest import PEAK_MEMORY_LIMIT, run_measured, snapshot

CHUNK = b"x" * 65536
SERVED = 2 << 30  # the most any answer streams (2 GiB) if a client kept reading


class Hostile(http.server.BaseHTTPRequestHandler):
    """/health: endless body (no length, read until close); /v1/models: a sane list;
    /v1/completions: 200 with Content-Length 4 GiB of JSON-looking bytes; /v1/unauthorized: 401 with an endless body."""

    protocol_version = "HTTP/1.0"
    mode = "endless-health"

    def log_message(self, *args):
        pass

    def _stream(self, status, length=None):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        sent = 0
        try:
            self.wfile.write(b'{"choices": [{"text": "')
            while sent < SERVED:
                self.wfile.write(CHUNK)
                sent += len(CHUNK)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what a bounded reader does

    def _json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            if self.server.mode == "endless-health":
                return self._stream(200)
            if self.server.mode == "endless-401":
                return self._stream(401)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if self.path == "/v1/models":
            if self.server.mode == "endless-401":
                return self._stream(401)
            return self._json(200, {"data": [{"id": "tiny"}]})
        return self._json(404, {"error": "no"})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._stream(200, length=4 << 30)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@pytest.fixture
def engine():
    srv = Server(("127.0.0.1", 0), Hostile)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def run_module(url, tmp_path, api_key=None, via="direct"):
    ep = dict(name="hostile", url=url, model="tiny", via=via)
    if api_key:
        ep["api_key"] = api_key
    args = dict(endpoints=[ep], timeout=3, interval=0.5, fail_on_not_ready=False)
    code = (
        "import json\n"
        "from ansible.module_utils.testing import patch_module_args\n"
        "from ansible_collections.llmops.onprem.plugins.modules import endpoint_ready as m\n"
        "with patch_module_args(%r):\n"
        "    try:\n"
        "        m.main()\n"
        "    except SystemExit:\n"
        "        pass\n"
    ) % (args,)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    before = snapshot(str(tmp_path))
    proc, peak = run_measured(code, env=dict(HOME=str(home), TMPDIR=str(home)), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert snapshot(str(tmp_path)) == before
    return json.loads(proc.stdout.strip().splitlines()[-1]), peak


def refusal(url, path):
    return ("the answer from %s%s is larger than 1048576 bytes (1 MiB): refused without reading the rest. An engine's "
            "/health, /v1/models and a short completion are a few KiB: check that the URL is the vLLM engine's, not "
            "another service." % (url, path))


@pytest.mark.parametrize("mode, path, step", [
    ("endless-health", "/health", "health"),       # no Content-Length: read until the server closes, which it never does
    ("huge-completion", "/v1/completions", "completion"),  # a declared 4 GiB body
    ("endless-401", "/health", "health"),          # an error status with an endless body (urllib's HTTPError path)
])
def test_a_huge_or_endless_answer_is_refused_in_bounded_memory(engine, tmp_path, mode, path, step):
    engine.mode = mode
    url = "http://127.0.0.1:%d" % engine.server_address[1]
    result, peak = run_module(url, tmp_path)
    [ep] = result["endpoints"]
    assert not result["ready"] and ep["steps"][-1] == dict(step=step, ok=False, seconds=ep["steps"][-1]["seconds"],
                                                           detail=refusal(url, path))
    assert ep["diagnosis"]["message"] == "hostile (model tiny): not ready yet: " + refusal(url, path)
    assert peak is not None and peak < PEAK_MEMORY_LIMIT, "peak RSS %d MiB" % (peak >> 20)


def test_an_api_key_over_plain_http_is_warned_about(engine, tmp_path):
    engine.mode = "huge-completion"
    url = "http://127.0.0.1:%d" % engine.server_address[1]
    key = "sk-" + "k" * 37
    result, _peak = run_module(url, tmp_path, api_key=key)
    assert [w["event"]["msg"] for w in result["warnings"]] == [
        "endpoints[hostile]: the API key goes to %s unencrypted (http:// probed via direct): anyone on that network path "
        "can read it. Probe via portforward (inside the API server's TLS), or give an https:// URL with the site CA." % url]
    assert key not in json.dumps(result)
    result, _peak = run_module(url, tmp_path)  # no key: nothing to warn about
    assert "warnings" not in result
