"""The pure diagnosis of endpoint_ready (module_utils/_endpoint.py) on pod/event/log dicts shaped
like the Kubernetes API's JSON. The same cases are provoked for real in
tests/integration/cluster/test_endpoint_ready.py."""
from ansible_collections.llmops.onprem.plugins.module_utils._endpoint import EndpointError, diagnose, pod_steps

EP = dict(name="chat", model="tiny", url="http://10.0.0.1:8000", namespace="ns", selector="x=y")


def pod(name="p1", phase="Pending", conditions=(), init=(), main=()):
    return dict(metadata=dict(name=name), status=dict(phase=phase, conditions=list(conditions),
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
