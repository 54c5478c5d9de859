"""The diagnosis rules table of module_utils/_endpoint.py: its order, the facts the rules read, and that every
rule's message and fix render from the facts they are given (no template names a value its facts lack)."""
import pytest

from ansible_collections.llmops.onprem.plugins.module_utils._endpoint import (
    DOWNLOADER_EXITS, ENDPOINT_RULES, POD_RULES, EndpointError, diagnose, endpoint_facts, first_rule, pod_facts)

EP = dict(name="chat", model="tiny", url="http://10.0.0.1:8000", namespace="ns", selector="x=y")


def test_order_of_the_table():
    assert [r.code for r in POD_RULES] == (
        ["image_pull", "waiting_for_old_pod", "insufficient_gpu", "unschedulable"]
        + [DOWNLOADER_EXITS[n][0] for n in sorted(DOWNLOADER_EXITS)]
        + ["init_failed", "unsupported_architecture", "engine_failed"])
    assert [r.code for r in ENDPOINT_RULES] == ["api_key_not_enforced", "chat_template_missing", "unauthorized",
                                                "unauthorized", "no_pods", "not_ready"]
    assert [r.code for r in POD_RULES + ENDPOINT_RULES if not r.fatal] == [
        "waiting_for_old_pod", "cache_lock_timeout", "no_pods", "not_ready"]


def _pod(init=(), main=(), conditions=()):
    return dict(metadata=dict(name="p1"), status=dict(phase="Pending", conditions=list(conditions),
                                                      initContainerStatuses=list(init), containerStatuses=list(main)))


def test_pod_facts_name_the_first_failure_of_each_kind():
    crash = dict(state=dict(waiting=dict(reason="CrashLoopBackOff")), lastState=dict(terminated=dict(exitCode=4)))
    p = _pod(init=[dict(name="a", state=dict(terminated=dict(exitCode=0))), dict(crash, name="model-pull")],
             main=[dict(name="engine", image="vllm:1", state=dict(waiting=dict(reason="ErrImagePull", message="no")))],
             conditions=[dict(type="PodScheduled", status="False", message="from the condition")])
    events = {"p1": [dict(reason="FailedScheduling", message="first"), dict(reason="FailedScheduling", message="last")]}
    f = pod_facts(p, events, {("p1", "model-pull"): "one\ntwo\nthree\nfour\n"}, going=("b", "a"))
    assert f["pull"] == dict(container="engine", image="vllm:1", reason="ErrImagePull", detail="no")
    assert f["pending"] == "last" and f["going"] == "a, b"
    assert f["init"] == dict(container="model-pull", exit=4, tail="two | three | four")
    assert f["engine"] is None
    # the first rule that holds wins: the image pull, before the scheduling and the downloader's exit
    rule, values = first_rule(POD_RULES, f)
    assert rule.code == "image_pull" and values["container"] == "engine"


def test_engine_facts_prefer_the_architecture_line():
    log = "x\nValueError: Model architectures ['Q'] are not supported for now. Supported architectures: []\n"
    crash = dict(name="engine", restartCount=2, state=dict(waiting=dict(reason="CrashLoopBackOff")),
                 lastState=dict(terminated=dict(exitCode=1)))
    f = pod_facts(_pod(main=[crash]), {}, {("p1", "engine"): log})
    assert f["engine"]["exit"] == 1 and f["engine"]["arch"].startswith("ValueError: Model architectures")
    assert first_rule(POD_RULES, f)[0].code == "unsupported_architecture"
    f = pod_facts(_pod(main=[crash]), {}, {("p1", "engine"): "CUDA out of memory"})
    assert f["engine"]["arch"] == "" and first_rule(POD_RULES, f)[0].code == "engine_failed"


def test_a_healthy_pod_matches_no_pod_rule():
    running = dict(name="engine", ready=True, state=dict(running=dict()))
    assert first_rule(POD_RULES, pod_facts(_pod(main=[running]), {}, {})) == (None, None)


@pytest.mark.parametrize("error, via, code", [
    (EndpointError("open", status=200, kind="api_key_not_enforced"), None, "api_key_not_enforced"),
    (EndpointError("template", status=400, kind="chat_template_missing"), None, "chat_template_missing"),
    (EndpointError("401", status=401), "proxy", "unauthorized"),
    (EndpointError("401", status=401), "portforward", "unauthorized"),
    (None, None, "no_pods"),
])
def test_endpoint_rules(error, via, code):
    ep = dict(EP, via=via)
    rule, _values = first_rule(ENDPOINT_RULES, endpoint_facts(ep, [], error))
    assert rule.code == code
    d = diagnose(ep, [], {}, {}, error)
    assert d["code"] == code and "%(" not in d["message"] + d["fix"]


def test_not_ready_is_the_last_word():
    d = diagnose(dict(EP, namespace=None), [], {}, {}, EndpointError("/health answered 503 (loading)", status=503),
                 going=("old",))
    assert d["code"] == "not_ready" and not d["fatal"]
    assert d["message"] == ("chat (model tiny): not ready yet: /health answered 503 (loading); on their way out: old")


def test_a_message_with_a_percent_sign_is_not_a_template():
    # Values from the cluster (a log line, an event) may hold '%': they fill a template, they are never one.
    p = _pod(init=[dict(name="model-pull", state=dict(terminated=dict(exitCode=6)))])
    d = diagnose(EP, [p], {}, {("p1", "model-pull"): "cache 100% full (%(where)s)"})
    assert d["code"] == "cache_full"
    assert d["message"].endswith("Last log lines: cache 100% full (%(where)s)")


def test_a_pod_without_a_name_is_refused_with_the_missing_key():
    # Bad input: pods must be the API's JSON (metadata.name); the diagnosis does not guess.
    with pytest.raises(KeyError, match="name"):
        diagnose(EP, [dict(metadata=dict(), status=dict())], {}, {})
