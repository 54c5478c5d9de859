"""An engine that serves without the API key it was meant to require (started without --api-key, or a
proxy in front that answers for it) must not be declared ready: endpoint_ready sends one request
without the key, and anything but 401 ends the wait at once with `api_key_not_enforced`. The
"engine" here is a loopback HTTP server that answers every route, key or not (not vLLM: the real
engine's 401 is checked in tests/integration/serving/test_endpoint_ready_local.py)."""
import http.server
import json
import socketserver
import threading

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.llmops.onprem.plugins.modules import endpoint_ready

KEY = "sk-the-sites-key-0123456789"


class Keyless(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def _json(self, obj):
        self.server.auth.append((self.path, self.headers.get("Authorization")))
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        if self.path in ("/health", "/ping"):
            return self._json({})
        return self._json({"data": [{"id": "tiny"}]})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/v1/chat/completions":
            return self._json({"choices": [{"message": {"role": "assistant", "content": "hi"}}]})
        return self._json({"choices": [{"text": " hi"}]})


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@pytest.fixture
def keyless():
    srv = Server(("127.0.0.1", 0), Keyless)
    srv.auth = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_an_engine_that_answers_without_the_key_is_not_ready(keyless, capsys):
    url = "http://127.0.0.1:%d" % keyless.server_address[1]
    with patch_module_args(dict(endpoints=[dict(name="open", url=url, model="tiny", api_key=KEY)], timeout=300,
                                interval=0.5)):
        with pytest.raises(SystemExit):
            endpoint_ready.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    ep = result["endpoints"][0]
    assert result["failed"] and not ep["ready"] and ep["seconds"] < 60  # fatal at once, not waited out
    assert [s["step"] for s in ep["steps"]] == ["health", "models", "completion", "chat", "sagemaker", "api_key"]
    assert ep["steps"][-1]["ok"] is False
    assert ep["diagnosis"]["code"] == "api_key_not_enforced" and ep["diagnosis"]["fatal"]
    assert result["msg"].startswith("1 of 1 endpoint(s) not ready. open: open (model tiny): /v1/models answered 200 "
                                    "WITHOUT the API key: the engine serves anyone who reaches it Fix: Start the engine "
                                    "with an API key")
    # The key goes with every request but /health, /ping (open by design) and the one that checks it is
    # required (the last); it is never printed.
    assert [path for path, auth in keyless.auth if auth is None] == ["/health", "/ping", "/v1/models"]
    assert keyless.auth[-1] == ("/v1/models", None)
    assert all(auth == "Bearer " + KEY for path, auth in keyless.auth[:-1] if path not in ("/health", "/ping"))
    assert KEY not in out
