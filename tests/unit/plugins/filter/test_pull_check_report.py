"""pull_check_report: each failing pull is named with its node, image, reason, diagnosis and fix."""
import pytest

from ansible_collections.llmops.onprem.plugins.filter.pull_check_report import pull_check_report

REG = "10.0.0.5:5000"


def pod(name, node, image, state):
    return {"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"image": image}]},
            "status": {"containerStatuses": [{"state": state}]} if state else {}}


def failed_event(pod_name, message):
    return {"involvedObject": {"name": pod_name}, "type": "Warning", "reason": "Failed", "message": message,
            "lastTimestamp": "2026-01-01T00:00:01Z"}


BACKOFF = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}


@pytest.mark.parametrize("message, diagnosis, fix_words", [
    ('Failed to pull image "docker.io/a/b:1": rpc error: code = Unknown desc = failed to resolve reference: failed to do '
     'request: Head "https://10.0.0.5:5000/v2/docker.io/a/b/manifests/1?ns=docker.io": x509: certificate signed by '
     'unknown authority', "x509", "does not trust the site registry's certificate"),
    ('Failed to pull image "docker.io/a/b:1": rpc error: code = Unknown desc = failed to resolve reference: pulling from '
     'host 10.0.0.5:5000 failed with status code [manifests 1]: 401 Unauthorized', "unauthorized", "refused the node's credentials"),
    ('Failed to pull image "docker.io/a/b:1": rpc error: code = NotFound desc = failed to resolve reference '
     '"docker.io/a/b:1": docker.io/a/b:1: not found', "not found", "add docker.io/a/b:1 to the bundle"),
    ('Failed to pull image "docker.io/a/b:1": failed to do request: Head "https://registry-1.docker.io/v2/a/b/manifests/1": '
     'dial tcp: lookup registry-1.docker.io: no such host', "upstream", "no mirror for this registry"),
    ('Failed to pull image "docker.io/a/b:1": failed to do request: Head "https://10.0.0.5:5000/v2/docker.io/a/b/manifests/1": '
     'dial tcp 10.0.0.5:5000: connect: connection refused', "unreachable", "cannot reach the site registry 10.0.0.5:5000"),
])
def test_diagnoses_from_the_failed_pull_event(message, diagnosis, fix_words):
    pods = [pod("p1", "gpu-1", "docker.io/a/b:1", BACKOFF)]
    events = [failed_event("p1", message), failed_event("p1", "Error: ImagePullBackOff"),
              failed_event("other", "x509: unrelated")]
    [r] = pull_check_report(pods, events, REG, True)
    assert (r["node"], r["image"], r["ok"], r["reason"], r["diagnosis"], r["message"]) == (
        "gpu-1", "docker.io/a/b:1", False, "ImagePullBackOff", diagnosis, message)
    assert fix_words in r["fix"]


def test_pulled_pods_are_ok_and_sorted_by_node():
    pods = [pod("p2", "node-b", "i:1", {"terminated": {"exitCode": 0}}), pod("p1", "node-a", "i:1", {"running": {}})]
    assert [(r["node"], r["ok"], r["diagnosis"]) for r in pull_check_report(pods, [], REG)] == [
        ("node-a", True, "ok"), ("node-b", True, "ok")]


def test_pending_until_final_then_timeout():
    pods = [pod("p1", "n", "i:1", {"waiting": {"reason": "ContainerCreating"}}), pod("p2", "m", "i:1", None)]
    assert [r["diagnosis"] for r in pull_check_report(pods, [], REG)] == ["pending", "pending"]
    final = pull_check_report(pods, [], REG, True)
    assert [r["diagnosis"] for r in final] == ["timeout", "timeout"]
    assert "did not finish in time" in final[0]["fix"]


def test_invalid_name():
    pods = [pod("p1", "n", "Bad:1", {"waiting": {"reason": "InvalidImageName", "message": "invalid reference format"}})]
    assert pull_check_report(pods, [], REG, True)[0]["diagnosis"] == "invalid name"
