"""s3_buckets, s3_endpoint_info and minio_user, run for real against the fake boundary in conftest.

Each module follows check -> real -> check again (no change) -> real again (no change)."""
import pytest

from ansible_collections.llmops.onprem.plugins.modules import minio_user, s3_buckets, s3_endpoint_info

ROOT = ("llmops-root", "R" * 40)  # the fake store's root credential (conftest.py)

ENDPOINT = dict(endpoint_url="https://10.89.0.2:9000", access_key=ROOT[0], secret_key=ROOT[1])


def test_s3_buckets_check_real_check_real(store, run_module):
    args = dict(ENDPOINT, names=["llm-engine", "model-checkpoints"])
    store.buckets.add("llm-engine")
    result = run_module(s3_buckets, dict(args, _ansible_check_mode=True))
    assert result["changed"] and result["created"] == ["model-checkpoints"] and result["existing"] == ["llm-engine"]
    assert store.buckets == {"llm-engine"}
    result = run_module(s3_buckets, args)
    assert result["changed"] and store.buckets == {"llm-engine", "model-checkpoints"}
    assert result["diff"] == {"before": {"buckets": ["llm-engine"]}, "after": {"buckets": ["llm-engine", "model-checkpoints"]}}
    for check in (True, False):
        result = run_module(s3_buckets, dict(args, _ansible_check_mode=check))
        assert not result["changed"] and result["created"] == []


def test_s3_buckets_refuses_bad_names_before_any_request(store, run_module):
    result = run_module(s3_buckets, dict(ENDPOINT, names=["Bad_Name"]))
    assert result["failed"] and "invalid bucket names: 'Bad_Name' may contain only lowercase" in result["msg"]
    assert store.requests == []


def test_s3_buckets_refuses_a_bucket_it_may_not_use(store, run_module):
    store.foreign_buckets.add("llm-engine")
    result = run_module(s3_buckets, dict(ENDPOINT, names=["llm-engine"]))
    assert result["failed"] and "may not use bucket(s) llm-engine (AccessDenied)" in result["msg"]


def test_s3_buckets_never_prints_the_secret(store, run_module_out):
    out = run_module_out(s3_buckets, dict(ENDPOINT, names=["llm-engine"]))[1]
    assert ROOT[1] not in out


def test_endpoint_info_reports_credentials_and_buckets(store, run_module_out):
    store.users["ext-ro"] = {"secret": "o" * 40, "status": "enabled", "policies": []}
    store.buckets.add("llm-engine")
    result, out = run_module_out(s3_endpoint_info, dict(
        ENDPOINT, name="readwrite", buckets=["llm-engine", "model-checkpoints"],
        other_credentials=[{"name": "readonly", "access_key": "ext-ro", "secret_key": "o" * 40},
                           {"name": "wrong", "access_key": "ext-ro", "secret_key": "x" * 40},
                           {"name": "unknown", "access_key": "nobody", "secret_key": "x" * 40}]))
    assert not result["changed"]
    assert result["endpoint"]["reachable"] and result["endpoint"]["tls_verified"]
    assert [(c["name"], c["valid"], c["error_code"]) for c in result["credentials"]] == [
        ("readwrite", True, ""), ("readonly", True, ""), ("wrong", False, "SignatureDoesNotMatch"),
        ("unknown", False, "InvalidAccessKeyId")]
    assert result["buckets"] == {"present": ["llm-engine"], "missing": ["model-checkpoints"], "denied": []}
    assert not result["ok"]
    assert "o" * 40 not in out and ROOT[1] not in out


def test_endpoint_info_reports_an_unreachable_endpoint_without_failing(store, run_module):
    store.unreachable = True
    result = run_module(s3_endpoint_info, dict(ENDPOINT, buckets=["llm-engine"]))
    assert not result.get("failed") and not result["ok"]
    assert result["endpoint"]["reachable"] is False and result["endpoint"]["error_kind"] == "unreachable"
    assert "Connection refused" in result["endpoint"]["error"]


def test_endpoint_info_fails_on_a_malformed_url(run_module):
    result = run_module(s3_endpoint_info, dict(ENDPOINT, endpoint_url="https://h:9000/some/path"))
    assert result["failed"] and "must not have a path" in result["msg"]


USER = dict(ENDPOINT, name="llmops-serving", secret="s" * 40, policy_name="llmops-serving-readonly",
            access="readonly", resources=["model-checkpoints", "llm-engine/fine_tuned_weights"])


def test_minio_user_check_real_check_real(store, run_module, run_module_out):
    store.buckets.update({"model-checkpoints", "llm-engine"})
    result, out = run_module_out(minio_user, dict(USER, _ansible_check_mode=True))
    assert result["changed"] and result["actions"] == ["put_policy", "create_user", "attach"]
    assert result["policy_enforced"] is None  # nothing to ask before the user exists
    assert store.users == {} and store.policies == {}
    assert "s" * 40 not in out and ROOT[1] not in out
    result, out = run_module_out(minio_user, USER)
    assert result["changed"] and result["actions"] == ["put_policy", "create_user", "attach"]
    assert store.users["llmops-serving"] == {"secret": "s" * 40, "status": "enabled", "policies": ["llmops-serving-readonly"]}
    assert store.policies["llmops-serving-readonly"] == result["policy"]
    assert "s" * 40 not in out
    for check in (True, False):
        result = run_module(minio_user, dict(USER, _ansible_check_mode=check))
        assert not result["changed"] and result["actions"] == []


@pytest.mark.parametrize("enforce", [True, False])
def test_minio_user_reports_whether_the_server_enforces_the_policy(store, run_module, enforce):
    store.buckets.update({"model-checkpoints", "llm-engine"})
    store.enforce_policies = enforce
    result = run_module(minio_user, USER)
    assert result["changed"] and result["policy_enforced"] is enforce
    probes = [r for r in store.requests if r.path == "/llmops-policy-probe"]
    assert len(probes) == 1 and "Credential=llmops-serving/" in probes[0].headers["authorization"]
    for check in (True, False):
        result = run_module(minio_user, dict(USER, _ansible_check_mode=check))
        assert not result["changed"] and result["policy_enforced"] is enforce


def test_minio_user_policy_probe_avoids_a_granted_bucket(store, run_module):
    store.buckets.add("llmops-policy-probe")
    store.enforce_policies = True
    result = run_module(minio_user, dict(USER, resources=["llmops-policy-probe"]))
    assert result["policy_enforced"] is True
    assert [r.path for r in store.requests if r.path.startswith("/llmops-policy-probe")][-1] == "/llmops-policy-probe-x"


def test_minio_user_resets_a_secret_that_no_longer_authenticates(store, run_module):
    store.buckets.add("model-checkpoints")
    store.policies["llmops-serving-readonly"] = minio_user.build_policy("readonly", USER["resources"])
    store.users["llmops-serving"] = {"secret": "old" * 10, "status": "enabled", "policies": ["llmops-serving-readonly"]}
    result = run_module(minio_user, USER)
    assert result["actions"] == ["reset_user"] and store.users["llmops-serving"]["secret"] == "s" * 40


def test_minio_user_detaches_other_policies(store, run_module):
    store.buckets.add("model-checkpoints")
    store.users["llmops-serving"] = {"secret": "s" * 40, "status": "enabled", "policies": ["readwrite"]}
    result = run_module(minio_user, USER)
    assert result["actions"] == ["put_policy", "detach", "attach"]
    assert store.users["llmops-serving"]["policies"] == ["llmops-serving-readonly"]


def test_minio_user_names_a_server_without_the_admin_api(store, run_module):
    store.admin_api = False
    result = run_module(minio_user, USER)
    assert result["failed"] and "does not implement MinIO's admin API" in result["msg"]


@pytest.mark.parametrize("override, message", [
    ({"name": ROOT[0]}, "is the admin credential itself"),
    ({"secret": "short"}, "a secret of at least 8"),
])
def test_minio_user_refuses_bad_input_before_any_request(store, run_module, override, message):
    result = run_module(minio_user, dict(USER, **override))
    assert result["failed"] and message in result["msg"]
    assert store.requests == []
