"""A hostile S3-compatible object store for the security suite: plain HTTP on 127.0.0.1, a random port.

It accepts any credential, ignores Range (every GET answers the whole object with 200), and serves
objects that need not match the manifest it serves: bodies longer or shorter than the manifest says,
with or without a Content-Length (without one the body is delimited by closing the connection).
Large bodies are generated block by block, never held in memory.

    store = HostileStore({"m/.llmops/manifest.json": Obj(data=b"..."),
                          "m/config.json": Obj(size=512 << 20, content_length=True)})
    store.url, store.requests, store.bytes_sent; store.stop()
"""
import http.server
import threading

BLOCK = 1 << 20


class Obj(object):
    """One object: ``data`` (bytes), or ``size`` bytes of ``fill``; ``content_length`` False sends no length."""

    def __init__(self, data=None, size=None, fill=b"\0", content_length=True):
        self.data, self.size, self.fill, self.content_length = data, size, fill, content_length

    def length(self):
        return len(self.data) if self.data is not None else self.size

    def blocks(self):
        if self.data is not None:
            yield self.data
            return
        left = self.size
        block = (self.fill * (BLOCK // len(self.fill) + 1))[:BLOCK]
        while left > 0:
            n = min(left, BLOCK)
            yield block[:n]
            left -= n


class HostileStore(object):
    def __init__(self, objects, bucket="models"):
        self.objects = dict(objects)
        self.bucket = bucket
        self.requests = []
        self.bytes_sent = 0
        self.lock = threading.Lock()
        store = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"   # the connection closes after each answer

            def log_message(self, *args):
                pass

            def _answer(self, body_too):
                path = self.path.split("?", 1)[0]
                with store.lock:
                    store.requests.append((self.command, self.path, self.headers.get("Range")))
                prefix = "/%s/" % store.bucket
                obj = store.objects.get(path[len(prefix):]) if path.startswith(prefix) else None
                if obj is None:
                    body = b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>"
                    self.send_response(404)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if body_too:
                        self.wfile.write(body)
                    return
                self.send_response(200)   # whatever Range asked for
                if obj.content_length:
                    self.send_header("Content-Length", str(obj.length()))
                self.end_headers()
                if not body_too:
                    return
                try:
                    for block in obj.blocks():
                        self.wfile.write(block)
                        with store.lock:
                            store.bytes_sent += len(block)
                except (BrokenPipeError, ConnectionResetError):
                    pass   # the client stopped reading: what a bounded reader does

            def do_GET(self):
                self._answer(True)

            def do_HEAD(self):
                self._answer(False)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
