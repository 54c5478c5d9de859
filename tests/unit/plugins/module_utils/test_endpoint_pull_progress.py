"""endpoint_ready relays the model pulls it sees while an endpoint waits for its init containers into a progress file
(docs/progress.md): read from model-pull's progress lines (the words of _progress.render) in the init container's
log, all endpoints together; done when the init containers finished, failed when the wait ends with a pull running.
The cluster is a scripted stand-in for the API server's pods and logs; the same lines come from the real model-pull
(tests/integration/checkpoints/test_model_pull.py runs it)."""
import json
import socket

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils import _endpoint as E
from ansible_collections.llmops.onprem.plugins.module_utils import _progress as P

GiB, MiB = 1 << 30, 1 << 20
SCHEDULED = [dict(type="PodScheduled", status="True")]
INITIALIZED = SCHEDULED + [dict(type="Initialized", status="True")]


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def line(model, done, total=2 * GiB, files=(1, 5), state="running"):
    doc = dict(stage=model, phase="download", state=state, bytes_done=done, bytes_total=total, files_done=files[0],
               files_total=files[1], rate_bytes_per_s=100 * MiB, eta_s=(total - done) / (100.0 * MiB), elapsed_s=5)
    return "model-pull: progress " + P.render(doc)


def pulling(name, log):
    pod = dict(metadata=dict(name=name), status=dict(phase="Pending", conditions=SCHEDULED, initContainerStatuses=[
        dict(name="model-pull", image="img", restartCount=0, state=dict(running=dict(startedAt="t")))],
        containerStatuses=[dict(name="engine", image="img", restartCount=0,
                                state=dict(waiting=dict(reason="PodInitializing")))]))
    return pod, {(name, "model-pull"): "model-pull: qwen: 5 files\n" + log + "\n"}


def pulled(name):
    pod = dict(metadata=dict(name=name), status=dict(phase="Running", conditions=INITIALIZED, initContainerStatuses=[
        dict(name="model-pull", image="img", restartCount=0, state=dict(terminated=dict(exitCode=0, reason="Completed")))],
        containerStatuses=[dict(name="engine", image="img", restartCount=0, ready=False,
                                state=dict(running=dict(startedAt="t")))]))
    return pod, {}


class ScriptedCluster(object):
    """Each snapshot (one per round of a waiting endpoint) shows the next scene: ([pods], logs)."""

    def __init__(self, scenes):
        self.scenes, self.i = scenes, 0

    def _scene(self, selector):
        pods, logs = self.scenes[min(self.i, len(self.scenes) - 1)]
        app = selector.split("=", 1)[1]  # app=chat selects the pods chat-*
        return [p for p in pods if p["metadata"]["name"].startswith(app + "-")], logs

    def pods(self, namespace, selector):
        return self._scene(selector)[0]

    def snapshot(self, namespace, selector):
        pods, logs = self._scene(selector)
        self.i += 1
        return E.live_pods(pods), {}, logs, []


class Clock(object):
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def scene(*pods):
    return [p for p, _l in pods], dict(kv for _p, logs in pods for kv in logs.items())


def run_wait(tmp_path, cluster, timeout, endpoints=("chat",)):
    clock = Clock()
    path = tmp_path / "pull.progress"
    written = []
    real = P.write_document

    def spy(p, doc):
        written.append(doc)
        return real(p, doc)
    E._progress.write_document = spy
    try:
        url = "http://127.0.0.1:%d" % closed_port()
        eps = [dict(name=n, model="tiny", url=url, namespace="ns", selector="app=%s" % n) for n in endpoints]
        E.wait(eps, lambda: cluster, timeout=timeout, interval=2.0, clock=clock, sleep=clock.sleep, progress_file=str(path))
    finally:
        E._progress.write_document = real
    return written, path


def test_the_pull_is_relayed_then_done_when_the_init_container_finished(tmp_path):
    cluster = ScriptedCluster([scene(pulling("chat-1", line("qwen", 512 * MiB))),
                               scene(pulling("chat-1", line("qwen", 1536 * MiB, files=(3, 5)))),
                               scene(pulled("chat-1"))])
    written, path = run_wait(tmp_path, cluster, timeout=10)
    assert [(d["state"], d["bytes_done"], d["files_done"]) for d in written] == [
        ("running", 512 * MiB, 1), ("running", 1536 * MiB, 3), ("done", 2 * GiB, 5)]
    first = written[0]
    assert (first["stage"], first["what"]) == ("model_pull", "chat (pod chat-1)")
    assert (first["bytes_total"], first["percent"]) == (2 * GiB, 25.0)
    assert first["eta_s"] == 15.0  # as precise as the line: 1536 MiB left at 100 MiB/s, "ETA 0:15"
    doc = P.read(str(path))
    assert doc == json.loads(json.dumps(written[-1])) and doc["percent"] == 100.0
    assert P.render(doc).startswith("model_pull: 2.0 GiB / 2.0 GiB (100.0%), 5/5 files")


def test_two_endpoints_pulling_are_one_document(tmp_path):
    both = scene(pulling("chat-1", line("qwen", 1 * GiB)), pulling("embed-1", line("bge", 256 * MiB, total=1 * GiB)))
    cluster = ScriptedCluster([both])
    written, _path = run_wait(tmp_path, cluster, timeout=0, endpoints=("chat", "embed"))
    doc = written[0]
    assert (doc["bytes_done"], doc["bytes_total"], doc["rate_bytes_per_s"]) == (1 * GiB + 256 * MiB, 3 * GiB, 200 * MiB)
    assert doc["what"] == "chat (pod chat-1), embed (pod embed-1)"


def test_a_wait_that_ends_while_the_pull_runs_says_failed(tmp_path):
    cluster = ScriptedCluster([scene(pulling("chat-1", line("qwen", 512 * MiB)))])
    written, path = run_wait(tmp_path, cluster, timeout=4)
    assert written[0]["state"] == "running" and written[-1]["state"] == "failed"
    assert "still running" in P.read(str(path))["error"]
    assert len(written) == 2  # an unchanged pull is not rewritten each round


def test_no_pull_seen_no_file(tmp_path):
    cluster = ScriptedCluster([scene(pulled("chat-1"))])
    written, path = run_wait(tmp_path, cluster, timeout=4)
    assert written == [] and not path.exists()


@pytest.mark.parametrize("log", ["", "model-pull: progress garbage", "model-pull: done: 5 bytes",
                                 "model-pull: progress qwen download: 1.0 MiB / (50.0%), 1.0 MiB/s, ETA 0:01"])
def test_a_log_without_a_readable_progress_line_is_no_pull(log):
    pod, logs = pulling("chat-1", log)
    assert E.pull_progress(dict(name="chat"), [pod], logs) == []


def test_the_last_progress_line_counts():
    pod, logs = pulling("chat-1", "\n".join([line("qwen", 1 * MiB), line("qwen", 7 * MiB), "model-pull: noise"]))
    [doc] = E.pull_progress(dict(name="chat"), [pod], logs)
    assert doc["bytes_done"] == 7 * MiB and doc["state"] == "running" and doc["what"] == "chat (pod chat-1)"
