"""endpoint_ready's transports without a cluster: PortForward speaks HTTP over the socket a
port-forward gives (a socketpair here, as the kubernetes client's is), to a live, Ready pod, with
the API key intact; Proxy builds the API server's service-proxy path; both bound the body."""
import socket
import threading

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils._endpoint import MAX_BODY, EndpointError, PortForward, Proxy, http_json

READY = [dict(type="Ready", status="True")]


def pod(name, ready=True, deleting=False, running=True):
    meta = dict(name=name, deletionTimestamp="t") if deleting else dict(name=name)
    state = dict(running=dict(startedAt="t")) if running else dict(waiting=dict(reason="PodInitializing"))
    return dict(metadata=meta, status=dict(phase="Running", conditions=READY if ready else [],
                                           containerStatuses=[dict(name="engine", state=state)]))


class Engine(object):
    """One HTTP exchange on the pod's end of the socketpair; records the request it got."""

    def __init__(self, response):
        self.mine, self.pods_end = socket.socketpair()
        self.request = b""
        self.t = threading.Thread(target=self.serve, args=(response,), daemon=True)
        self.t.start()

    def serve(self, response):
        while b"\r\n\r\n" not in self.request:
            chunk = self.pods_end.recv(65536)
            if not chunk:
                return
            self.request += chunk
        try:
            self.pods_end.sendall(response)
        except OSError:
            pass
        self.pods_end.close()


class FakeForward(object):
    def __init__(self, engine):
        self.engine = engine
        self.closed = False

    def socket(self, port):
        return self.engine.mine

    def close(self):
        self.closed = True


class FakeCluster(object):
    def __init__(self, pods, response):
        self.items = pods
        self.engine = Engine(response)
        self.forwarded = []

    def pods(self, namespace, selector):
        return self.items

    def portforward(self, namespace, name, port):
        self.forwarded.append((namespace, name, port))
        self.pf = FakeForward(self.engine)
        return self.pf


def test_portforward_reaches_the_ready_live_pod_with_the_api_key():
    body = b'{"data": [{"id": "tiny"}]}'
    c = FakeCluster([pod("old", deleting=True), pod("starting", ready=False), pod("new")],
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    status, answer = http_json("http://10.96.0.9:8000/v1/models", api_key="sk-k", context=PortForward(c, "ns", "x=y"))
    assert (status, answer) == (200, {"data": [{"id": "tiny"}]})
    assert c.forwarded == [("ns", "new", 8000)] and c.pf.closed
    head = c.engine.request.decode()
    assert head.startswith("GET /v1/models HTTP/1.1\r\n") and "Authorization: Bearer sk-k\r\n" in head
    assert "Host: 10.96.0.9:8000\r\n" in head


def test_portforward_waits_for_a_pod_that_runs_its_engine():
    c = FakeCluster([pod("old", deleting=True), pod("init", ready=False, running=False)], b"")
    with pytest.raises(EndpointError) as e:
        http_json("http://10.96.0.9:8000/health", context=PortForward(c, "ns", "x=y"))
    assert str(e.value) == "no answer via port-forward: no live pod of 'x=y' runs its engine yet"
    assert c.forwarded == []


def test_portforward_bounds_the_body():
    c = FakeCluster([pod("new")], b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (MAX_BODY + 4096))
    with pytest.raises(EndpointError) as e:
        http_json("http://10.96.0.9:8000/health", context=PortForward(c, "ns", "x=y"))
    assert str(e.value).startswith("the answer from http://10.96.0.9:8000/health (port-forward to pod new port 8000) is "
                                   "larger than 1048576 bytes (1 MiB): refused without reading the rest.")


class Raw(object):
    def __init__(self, status, body):
        self.status, self.body, self.released = status, body, False

    def read(self, n):
        return self.body[:n]

    def release_conn(self):
        self.released = True


class ProxyCluster(object):
    def __init__(self, response):
        self.response = response
        self.calls = []

    def raw_request(self, method, path, data, headers, timeout):
        self.calls.append((method, path, data, headers))
        return self.response


def test_proxy_path_and_answer():
    r = Raw(401, b'{"error": "Unauthorized"}')
    c = ProxyCluster(r)
    status, answer = http_json("http://10.96.0.9:8000/v1/models", api_key="sk-k", context=Proxy(c, "ns", "rel-chat"))
    assert (status, answer) == (401, {"error": "Unauthorized"}) and r.released
    assert c.calls == [("GET", "/api/v1/namespaces/ns/services/http:rel-chat:8000/proxy/v1/models", None,
                        {"Authorization": "Bearer sk-k"})]
