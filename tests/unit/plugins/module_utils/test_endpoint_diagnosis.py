"""The pure diagnosis of endpoint_ready (module_utils/_endpoint.py) on pod/event/log dicts shaped
like the Kubernetes API's JSON. The same cases are provoked for real in
tests/integration/cluster/test_endpoint_ready.py."""
from ansible_collections.llmops.onprem.plugins.module_utils._endpoint import EndpointError, Probe, diagnose, live_pods, pod_steps

EP = dict(name="chat", model="tiny", url="http://10.0.0.1:8000", namespace="ns", selector="x=y")


def pod(name="p1", phase="Pending", conditions=(), init=(), main=(), deleting=False):
    meta = dict(name=name, deletionTimestamp="2026-12-03T06:00:00Z") if deleting else dict(name=name)
    return dict(metadata=meta, status=dict(phase=phase, conditions=list(conditions),
                                           initContainerStatuses=list(init), containerStatuses=list(main)))


def waiting(name, reason, message="", image="img"):
    return dict(name=name, image=image, restartCount=0, state=dict(waiting=dict(reason=reason, message=message)))


def terminated(name, code, restarts=1):
    return dict(name=name, image="img", restartCount=restarts,
                state=dict(waiting=dict(reason="CrashLoopBackOff")),
                lastState=dict(terminated=dict(exitCode=code, reason="Error")))


def test_image_pull():
    p = pod(init=[waiting("model-pull", "ImagePullBackOff", 'Back-off pulling image "127.0.0.1:9/x:1"', "127.0.0.1:9/x:1")])
    d = diagnose(EP, [p], {}, {})
    assert d["code"] == "image_pull" and d["fatal"]
    assert d["message"] == ('chat (model tiny): pod p1 cannot pull image 127.0.0.1:9/x:1 for container model-pull '
                            '(ImagePullBackOff): Back-off pulling image "127.0.0.1:9/x:1"')
    assert "not in the site registry" in d["fix"] and "llmops.onprem.site_image" in d["fix"]


def test_insufficient_gpu_from_scheduler_event():
    p = pod(conditions=[dict(type="PodScheduled", status="False", reason="Unschedulable", message="")])
    ev = {"p1": [dict(type="Warning", reason="FailedScheduling",
                      message="0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")]}
    d = diagnose(EP, [p], ev, {})
    assert d["code"] == "insufficient_gpu" and d["fatal"]
    assert d["message"] == "chat (model tiny): pod p1 is Pending: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    assert d["evidence"]["events"] == ["Warning FailedScheduling: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."]


def test_other_unschedulable():
    p = pod(conditions=[dict(type="PodScheduled", status="False", message="0/1 nodes are available: 1 node(s) didn't match node selector.")])
    d = diagnose(EP, [p], {}, {})
    assert d["code"] == "unschedulable" and "nodeSelector" in d["fix"]


def test_downloader_exit_4_and_3():
    logs = {("p1", "model-pull"): "model-pull: no manifest at s3://b/wrong/.llmops/manifest.json\n"}
    d = diagnose(EP, [pod(init=[terminated("model-pull", 4)])], {}, logs)
    assert d["code"] == "checkpoint_missing" and d["fatal"]
    assert d["message"] == ("chat (model tiny): init container model-pull of pod p1 exited 4: the checkpoint prefix is "
                            "empty or wrong: no .llmops/manifest.json under it. Last log lines: "
                            "model-pull: no manifest at s3://b/wrong/.llmops/manifest.json")
    assert d["evidence"]["log_tail"] == ["model-pull: no manifest at s3://b/wrong/.llmops/manifest.json"]
    d = diagnose(EP, [pod(init=[terminated("model-pull", 3)])], {}, {})
    assert d["code"] == "credential_refused" and "read-only credential" in d["fix"]
    d = diagnose(EP, [pod(init=[terminated("model-pull", 8)])], {}, {})
    assert d["code"] == "cache_lock_timeout" and not d["fatal"] and "--lock-timeout" in d["fix"]
    d = diagnose(EP, [pod(init=[terminated("model-pull", 9)])], {}, {})
    assert d["code"] == "init_failed" and d["message"].endswith("exited 9. Last log lines: ")


def test_unsupported_architecture_from_engine_log():
    log = ("INFO vLLM\nValueError: Model architectures ['Qwen3ForCausalLM'] are not supported for now. "
           "Supported architectures: dict_keys(['LlamaForCausalLM'])\n")
    p = pod(phase="Running", init=[dict(name="model-pull", state=dict(terminated=dict(exitCode=0)))],
            main=[terminated("engine", 1, restarts=2)])
    d = diagnose(EP, [p], {}, {("p1", "engine"): log})
    assert d["code"] == "unsupported_architecture" and d["fatal"]
    assert "Model architectures ['Qwen3ForCausalLM'] are not supported for now." in d["message"]
    d = diagnose(EP, [p], {}, {("p1", "engine"): "RuntimeError: CUDA out of memory\n"})
    assert d["code"] == "engine_failed" and "exited 1 (restarts 2)" in d["message"]


def test_unauthorized_and_waiting():
    d = diagnose(EP, [], {}, {}, EndpointError("/v1/models answered 401", status=401))
    assert d["code"] == "unauthorized" and d["fatal"] and "VLLM_API_KEY" in d["fix"]
    d = diagnose(EP, [], {}, {}, EndpointError("no answer"))
    assert d["code"] == "no_pods" and not d["fatal"]
    d = diagnose(dict(EP, namespace=None), [], {}, {}, EndpointError("/health answered 503 (loading)", status=503))
    assert d["code"] == "not_ready" and not d["fatal"] and d["message"].endswith("/health answered 503 (loading)")


def test_pod_steps():
    assert pod_steps([]) == (False, False, "no pod matches the selector yet")
    p = pod(conditions=[dict(type="PodScheduled", status="True"), dict(type="Initialized", status="False")])
    assert pod_steps([p]) == (True, False, "1 pod(s): p1")


READY = [dict(type="PodScheduled", status="True"), dict(type="Initialized", status="True"), dict(type="Ready", status="True")]


def running(name, ready=True):
    return dict(name=name, image="img", restartCount=0, ready=ready, state=dict(running=dict(startedAt="t")))


def test_live_pods_drop_pods_on_their_way_out():
    old = pod("old", phase="Running", conditions=READY, main=[running("engine")], deleting=True)
    evicted = pod("evicted", phase="Failed")
    new = pod("new", conditions=[dict(type="PodScheduled", status="True"), dict(type="Initialized", status="False")])
    assert live_pods([old, evicted, new]) == [new]
    # Only the old, still Ready, pod: there is no endpoint pod yet, so the pod steps do not pass on it.
    assert pod_steps(live_pods([old])) == (False, False, "no pod matches the selector yet")


def test_an_old_pod_that_exited_on_sigterm_is_not_diagnosed():
    """The restart flake: the old pod's engine ended (SIGKILL after the grace period, 137) while the
    new pod was still starting; the diagnosis must wait on the new pod, not end the wait as engine_failed."""
    old = pod("old", phase="Running", conditions=READY, deleting=True,
              main=[dict(name="engine", restartCount=0, state=dict(terminated=dict(exitCode=137, reason="Error")))])
    new = pod("new", phase="Pending", conditions=READY[:1] + [dict(type="Initialized", status="False")],
              init=[running("model-pull", ready=False)], main=[waiting("engine", "PodInitializing")])
    ev = {"new": [dict(type="Normal", reason="Started", message="Started container model-pull")]}
    logs = {("new", "model-pull"): "model-pull: tiny: verifying the cached copy\n"}
    assert diagnose(EP, [old, new], ev, logs)["code"] == "engine_failed"  # what the old code judged
    d = diagnose(EP, live_pods([old, new]), ev, logs, EndpointError("init_done: 1 pod(s): new"), going=["old"])
    assert d["code"] == "not_ready" and not d["fatal"]
    assert d["message"] == ("chat (model tiny): not ready yet: init_done: 1 pod(s): new (pod new: Pending, model-pull "
                            "running, engine waiting PodInitializing); on their way out: old")
    assert d["evidence"]["events"] == ["Normal Started: Started container model-pull"]
    assert d["evidence"]["log_tail"] == ["[model-pull] model-pull: tiny: verifying the cached copy"]
    assert d["evidence"]["leaving"] == ["old"] and [p["pod"] for p in d["evidence"]["pods"]] == ["new"]


def test_not_ready_shows_the_engine_log_of_the_pod_that_is_not_ready():
    ready = pod("a", phase="Running", conditions=READY, main=[running("engine")])
    slow = pod("b", phase="Running", conditions=READY[:2], init=[dict(name="model-pull", state=dict(terminated=dict(exitCode=0)))],
               main=[running("engine", ready=False)])
    logs = {("a", "engine"): "ready\n", ("b", "model-pull"): "0 bytes downloaded\n", ("b", "engine"): "x\nLoading weights\n"}
    d = diagnose(EP, [ready, slow], {}, logs, EndpointError("/health answered 503 (loading)", status=503))
    assert d["message"] == "chat (model tiny): not ready yet: /health answered 503 (loading) (pod b: Running, engine running)"
    assert d["evidence"]["log_tail"] == ["[engine] x", "[engine] Loading weights", "[model-pull] 0 bytes downloaded"]


def test_a_new_pod_pending_on_the_gpus_of_a_terminating_one_is_waited_for():
    p = pod("new", conditions=[dict(type="PodScheduled", status="False", reason="Unschedulable")])
    ev = {"new": [dict(type="Warning", reason="FailedScheduling", message="0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")]}
    d = diagnose(EP, [p], ev, {}, going=["old"])
    assert d["code"] == "waiting_for_old_pod" and not d["fatal"]
    assert d["message"] == ("chat (model tiny): pod new is Pending (0/1 nodes are available: 1 Insufficient nvidia.com/gpu.) "
                            "while pod(s) old of this endpoint are still terminating and hold their resources")
    assert diagnose(EP, [p], ev, {})["code"] == "insufficient_gpu"
    d = diagnose(EP, [], {}, {}, EndpointError("pods_scheduled: no pod"), going=["old"])
    assert d["code"] == "no_pods" and not d["fatal"] and d["message"].endswith("matches 'x=y' (on their way out: old)")


class FakeCluster(object):
    """The boundary: what the API server lists (an old pod still Ready during its grace period)."""

    def __init__(self, pods):
        self.items = pods

    def pods(self, namespace, selector):
        return self.items

    def snapshot(self, namespace, selector):
        return live_pods(self.items), {}, {}, [p["metadata"]["name"] for p in self.items if p not in live_pods(self.items)]


def test_probe_does_not_pass_the_pod_steps_on_a_terminating_pod():
    old = pod("old", phase="Running", conditions=READY, main=[running("engine")], deleting=True)
    probe = Probe(dict(EP), FakeCluster([old]))
    probe.poll()
    r = probe.result()
    assert not r["ready"] and r["steps"] == [dict(step="pods_scheduled", ok=False, seconds=r["steps"][0]["seconds"],
                                                  detail="pods_scheduled: no pod matches the selector yet")]
    assert r["diagnosis"]["code"] == "no_pods" and r["diagnosis"]["evidence"]["leaving"] == ["old"]


def test_the_steps_an_endpoint_walks():
    """chat and api_key are checked unless the endpoint says there is nothing to check."""
    local = dict(name="m", model="tiny", url="http://127.0.0.1:8000")
    assert Probe(dict(local, api_key="k")).steps == ["health", "models", "completion", "chat", "sagemaker", "api_key"]
    assert Probe(dict(local)).steps == ["health", "models", "completion", "chat", "sagemaker"]
    assert Probe(dict(local, chat=False, api_key="k")).steps == ["health", "models", "completion", "sagemaker", "api_key"]
    assert Probe(dict(EP, api_key="k"), FakeCluster([])).steps[:2] == ["pods_scheduled", "init_done"]


def test_an_engine_that_answers_without_its_key_is_fatal():
    err = EndpointError("/v1/models answered 200 WITHOUT the API key: the engine serves anyone who reaches it", 200,
                        kind="api_key_not_enforced")
    d = diagnose(EP, [], {}, {}, err)
    assert d["code"] == "api_key_not_enforced" and d["fatal"]
    assert d["message"] == ("chat (model tiny): /v1/models answered 200 WITHOUT the API key: the engine serves anyone "
                            "who reaches it")
    assert "apiKey.secretName" in d["fix"]


def test_a_checkpoint_without_a_chat_template_is_fatal_and_says_how_out():
    err = EndpointError("/v1/chat/completions answered 400: ...", 400, kind="chat_template_missing")
    d = diagnose(EP, [], {}, {}, err)
    assert d["code"] == "chat_template_missing" and d["fatal"]
    assert "chat: false" in d["fix"] and "chat_template" in d["fix"]


# --- Issue 21, second cause: the failing container's log read while the kubelet replaced it ---------------

class LogCore(object):
    """read_namespaced_pod_log as the kubelet answers it: the current or the previous run's text."""

    def __init__(self, current, previous):
        self.texts = {False: current, True: previous}
        self.calls = []

    def read_namespaced_pod_log(self, pod, namespace, container=None, previous=False, tail_lines=None,
                                _preload_content=True):
        self.calls.append(previous)

        class R(object):
            data = self.texts[previous].encode()
        return R()


def cluster_with(core, pods):
    from ansible_collections.llmops.onprem.plugins.module_utils._endpoint import Cluster

    c = Cluster.__new__(Cluster)
    c.core = core
    c.pods = lambda namespace, selector: pods
    c.events = lambda namespace, pod: []
    return c


GONE = "unable to retrieve container logs for containerd://16d4c79091a2e3406d3721ddfff0e1647c98c1904cb1b8ca8d8f1dc0a21649c0"


def test_the_kubelets_no_log_message_is_not_the_containers_log_and_the_other_run_is_read():
    p = pod(init=[terminated("model-pull", 3)])  # waiting (CrashLoopBackOff), the failed run in lastState
    core = LogCore(current="model-pull: the object store refused the credential reader: InvalidAccessKeyId\n",
                   previous=GONE)
    _pods, _events, logs, _going = cluster_with(core, [p]).snapshot("ns", "x=y")
    assert core.calls == [True, False]  # the previous run first (it failed), then the one that replaced it
    assert logs[("p1", "model-pull")].startswith("model-pull: the object store refused")
    core = LogCore(current=GONE, previous=GONE)
    _pods, _events, logs, _going = cluster_with(core, [p]).snapshot("ns", "x=y")
    assert logs[("p1", "model-pull")] == ""


class FlakyLogCluster(FakeCluster):
    """The failed init container's log is unreadable for the first `unreadable` snapshots."""

    def __init__(self, pods, unreadable):
        super(FlakyLogCluster, self).__init__(pods)
        self.unreadable = unreadable

    def snapshot(self, namespace, selector):
        self.unreadable -= 1
        text = "" if self.unreadable >= 0 else "model-pull: the object store refused the credential: InvalidAccessKeyId"
        return live_pods(self.items), {}, {("p1", "model-pull"): text}, []


def test_a_fatal_verdict_waits_a_few_rounds_for_the_log_that_says_why():
    p = pod(init=[terminated("model-pull", 3)])
    probe = Probe(dict(EP), FlakyLogCluster([p], unreadable=2))
    for _round in range(2):
        probe.poll()
        assert probe.diagnosis["code"] == "credential_refused" and not probe.diagnosis["fatal"] and not probe.done
    probe.poll()
    assert probe.diagnosis["fatal"] and probe.done and "InvalidAccessKeyId" in probe.diagnosis["message"]
    assert probe.diagnosis["container"] == "model-pull"


def test_a_log_that_never_comes_does_not_hold_the_verdict_back():
    p = pod(init=[terminated("model-pull", 3)])
    probe = Probe(dict(EP), FlakyLogCluster([p], unreadable=100))
    rounds = 0
    while not probe.done:
        probe.poll()
        rounds += 1
    assert rounds == 4 and probe.diagnosis["code"] == "credential_refused" and probe.diagnosis["fatal"]
