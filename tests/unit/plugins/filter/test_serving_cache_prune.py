"""serving_cache_prune: which node-cache checkpoint versions the vllm_serving role's prune entry point removes."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.serving_cache_prune import serving_cache_prune

A, B, C = "a" * 64, "b" * 64, "c" * 64


def pod(ns, name, *args, deleting=False):
    meta = dict(namespace=ns, name=name)
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return dict(metadata=meta, spec=dict(containers=[dict(name="engine", args=list(args))]))


def test_current_kept_pod_referenced_kept_the_rest_removed():
    found = [dict(path="/c/tiny/" + C), dict(path="/c/tiny/" + A), dict(path="/c/tiny/" + B)]
    pods = [pod("llmops", "old-1", "--model", "/models/tiny/" + A, deleting=True), pod("other", "x", "sleep")]
    plan = serving_cache_prune(found, {"tiny": B}, pods)
    assert plan == [
        dict(path="/c/tiny/" + A, model="tiny", digest=A, remove=False, why="a pod references it: llmops/old-1"),
        dict(path="/c/tiny/" + B, model="tiny", digest=B, remove=False, why="current"),
        dict(path="/c/tiny/" + C, model="tiny", digest=C, remove=True, why=""),
    ]


def test_pods_unknown_removes_nothing():
    plan = serving_cache_prune(["/c/tiny/" + A, "/c/tiny/" + B], {"tiny": B}, None)
    assert [(e["remove"], e["why"]) for e in plan] == [(False, "the cluster's pods are unknown (no llmops_kubeconfig)"), (False, "current")]


def test_digest_of_another_model_is_not_current_here():
    # The same digest served by another model does not keep this model's copy; a pod naming it does.
    plan = serving_cache_prune(["/c/tiny/" + A], {"other": A}, [])
    assert plan[0]["remove"] is True
    plan = serving_cache_prune(["/c/tiny/" + A], {"other": A}, [pod("ns", "p", "/models/other/" + A)])
    assert plan[0]["why"] == "a pod references it: ns/p"


def test_nothing_found_and_bad_input():
    assert serving_cache_prune([], {"tiny": A}, []) == []
    with pytest.raises(AnsibleFilterError, match="not named by a 64-hex digest"):
        serving_cache_prune(["/c/tiny/.lock"], {}, [])
    with pytest.raises(AnsibleFilterError, match="current must map model names to digests"):
        serving_cache_prune([], ["tiny"], [])
    with pytest.raises(AnsibleFilterError, match="an entry without a path"):
        serving_cache_prune([dict(size=1)], {}, [])
