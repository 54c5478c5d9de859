"""model_engine_values and its companions: the values of scaleapi's model-engine chart from the
site's facts, and for each trap of the vendor's chart and docs (seeds 000-002) a setting that
springs it is refused with a message naming the value and the fix."""
import copy

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.model_engine_images import model_engine_images
from ansible_collections.llmops.onprem.plugins.filter.model_engine_missing_images import model_engine_missing_images
from ansible_collections.llmops.onprem.plugins.filter.model_engine_render_check import model_engine_render_check
from ansible_collections.llmops.onprem.plugins.filter.model_engine_values import FilterModule, model_engine_values

REG = "registry.site.internal:5000"
TAG = "e360bfb1d21d9d4e7b7fcb6b29ca752095b4d0f4"
SETTINGS = dict(
    site_registry=REG, namespace="llmops", endpoint_namespace="llmops-endpoints",
    images={"frameworks": {"vllm": "0.11.0"}},
    redis={"host": "10.89.0.5", "port": 6379, "k8s_secret": {"name": "llmops-redis-auth", "key": "auth-token"}},
    postgres={"host": "10.89.0.7", "port": 5432,
              "k8s_secret": {"name": "llm-engine-postgres-credentials", "key": "database_url"}},
    object_store={"s3_endpoint_url": "https://10.89.0.6:9000", "region": "us-east-1",
                  "model_engine": {"s3_bucket": "llm-engine", "default_region": "us-east-1",
                                   "s3_file_llm_fine_tuning_job_repository": "s3://llm-engine/llm-ft-job-repository",
                                   "hf_user_fine_tuned_weights_prefix": "s3://llm-engine/fine_tuned_weights"},
                  "credentials": {"readwrite": {"k8s_secret": {
                      "name": "model-engine-object-storage-config", "access_key_key": "access-key",
                      "secret_key_key": "secret-key"}}}},
    gpu_nodes=[{"name": "gpu-1", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "4"}}],
)


def run(**changes):
    s = copy.deepcopy(SETTINGS)
    s.update(changes)
    return model_engine_values(s)


def test_the_site_settings_have_no_problem_and_the_values_the_issue_asks_for():
    out = run()
    assert out["problems"] == []
    v = out["values"]
    assert v["config"]["values"]["infra"]["cloud_provider"] == "onprem"
    assert v["celeryBrokerType"] == "elasticache" and v["celery_broker_type_redis"] is True
    assert v["db"]["runDbMigrationScript"] is True
    assert v["secrets"] == {"kubernetesDatabaseSecretName": "llm-engine-postgres-credentials"}
    assert v["redis"]["authSecretName"] == "llmops-redis-auth" and v["redis"]["authSecretKey"] == "auth-token"
    assert v["redis"]["auth"] is None and v["redis"]["unsafeSsl"] is False and v["redis"]["enableTLS"] is True
    assert v["config"]["values"]["launch"]["cache_redis_onprem_url"] == (
        "rediss://10.89.0.5:6379/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/llmops/site-ca/ca.crt")
    env = dict((e["name"], e) for e in v["extraEnvVars"])
    assert env["CELERY_BROKER_URL"]["value"].startswith("rediss://:$(REDIS_AUTH_TOKEN)@10.89.0.5:6379/0?")
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "model-engine-object-storage-config", "key": "access-key"}
    assert env["AWS_CA_BUNDLE"]["value"] == "/etc/llmops/site-ca/ca.crt"
    assert env["AWS_CONFIG_FILE"]["value"] == "/etc/llmops/aws/config"
    assert v["s3EndpointUrl"] == "https://10.89.0.6:9000"
    assert v["image"]["gatewayRepository"] == REG + "/public.ecr.aws/b2z8n5q1/model-engine"
    assert v["image"]["pullPolicy"] == "IfNotPresent"
    assert v["config"]["values"]["infra"]["docker_repo_prefix"] == REG
    assert v["config"]["values"]["launch"]["vllm_repository"] == REG + "/public.ecr.aws/b2z8n5q1/vllm"
    assert v["inferenceFramework"]["vllm"] == "0.11.0"
    assert v["inferenceFramework"]["deepspeed"] == "not-offered-at-this-site"
    assert v["utilityImages"]["busybox"] == {"repository": REG + "/public.ecr.aws/docker/library/busybox", "tag": "1.36.1"}
    assert v["datadog"] == {"enabled": False} and v["dd_trace_enabled"] is False
    assert v["virtualservice"]["enabled"] is False and v["destinationrule"]["enabled"] is False
    assert v["config"]["values"]["launch"]["sensitive_log_mode"] is True
    assert v["nodeSelector"] == {"node-lifecycle": None} and v["balloonNodeSelector"] == {"node-lifecycle": None}
    assert "prometheus_server_address" not in v["config"]["values"]["infra"]
    assert out["node_labels"] == [{"node": "gpu-1", "labels": {"k8s.amazonaws.com/accelerator": "nvidia-hopper-h100"},
                                   "product": "NVIDIA-H100-80GB-HBM3"}]
    assert [(t["gpus"], t["gpu_memory_le"]) for t in v["recommendedHardware"]["byGpuMemoryGb"]] == [(1, 80), (2, 160), (4, 320)]
    assert v["balloons"] == [{"acceleratorName": "nvidia-hopper-h100", "replicaCount": 0, "gpuCount": 1}]
    assert v["imageCache"]["devices"][0]["nodeSelector"] == {"k8s.amazonaws.com/accelerator": "nvidia-hopper-h100"}
    assert v["podSecurityContext"]["runAsNonRoot"] is True
    assert v["containerSecurityContext"]["capabilities"]["drop"] == ["ALL"]


# Each trap: the inventory setting that springs it, and what the message must name (value and fix).
TRAPS = [
    ("cloud provider", dict(values={"config": {"values": {"infra": {"cloud_provider": "aws"}}}}),
     ["config.values.infra.cloud_provider is 'aws'", "Set it to onprem"]),
    ("broker type from the docs", dict(values={"celeryBrokerType": "redis"}),
     ["celeryBrokerType is 'redis'", "literal elasticache", "Set celeryBrokerType: elasticache"]),
    ("broker flag", dict(values={"celery_broker_type_redis": None}),
     ["celery_broker_type_redis is None", "Set celery_broker_type_redis: true"]),
    ("redis without certificate check (seed 002)",
     dict(values={"config": {"values": {"launch": {"cache_redis_onprem_url": "rediss://10.89.0.5:6379/0?ssl_cert_reqs=none"}}}}),
     ["config.values.launch.cache_redis_onprem_url", "ssl_cert_reqs=none", "ssl_cert_reqs=required&ssl_ca_certs="]),
    ("redis in plain text", dict(values={"config": {"values": {"launch": {"cache_redis_onprem_url": "redis://10.89.0.5:6379/0"}}}}),
     ["cache_redis_onprem_url is redis://10.89.0.5:6379/0: plain-text Redis", "use rediss://"]),
    ("redis password as a plain value", dict(values={"redis": {"auth": "s3cret"}}),
     ["redis.auth holds the Redis password as a plain value", "redis.authSecretName"]),
    ("redis password in a URL",
     dict(values={"extraEnvVars": [{"name": "CELERY_BROKER_URL",
                                    "value": "rediss://:hunter2@10.89.0.5:6379/0?ssl_cert_reqs=required"}]}),
     ["extraEnvVars[CELERY_BROKER_URL].value carries a password in the URL", "$(REDIS_AUTH_TOKEN)"]),
    ("redis without a Secret", dict(redis={"host": "10.89.0.5", "port": 6379}),
     ["redis.authSecretName is empty", "Run the redis stage first"]),
    ("KEDA skips the certificate", dict(values={"redis": {"unsafeSsl": True}}),
     ["redis.unsafeSsl is true", "Set redis.unsafeSsl: false"]),
    ("KEDA auth from AWS Secrets Manager", dict(values={"redis": {"enableAuth": True}}),
     ["redis.enableAuth is true", "AWS Secrets Manager", "Set redis.enableAuth: false"]),
    ("broker URL value before the Secret", dict(values={"celeryBrokerUrl": "rediss://10.89.0.5:6379/0?ssl_cert_reqs=required"}),
     ["celeryBrokerUrl/celeryResultBackend are set", "Remove them"]),
    ("no object store", dict(object_store={}),
     ["s3EndpointUrl is empty", "run the minio stage first", "config.values.infra.s3_bucket is empty"]),
    ("AWS profile and IRSA config", dict(values={"aws": {"configMap": {"name": "default-config", "create": True}, "profileName": "default"}}),
     ["aws is set", "Remove aws from model_engine_values"]),
    ("database key", dict(postgres={"k8s_secret": {"name": "llm-engine-postgres-credentials", "key": "uri"}}),
     ["postgres_connection.k8s_secret.key is 'uri'", "reads the key database_url", "Set postgres_k8s_secret_key: database_url"]),
    ("no database Secret", dict(postgres={}),
     ["secrets.kubernetesDatabaseSecretName is empty", "Run the postgres stage first"]),
    ("cloud database secret", dict(values={"secrets": {"cloudDatabaseSecretName": "prod/db"}}),
     ["secrets.cloudDatabaseSecretName is set", "Remove it"]),
    ("no migrations (seed 001)", dict(values={"db": {"runDbMigrationScript": False}}),
     ["db.runDbMigrationScript is false", "Set db.runDbMigrationScript: true"]),
    ("vendor image", dict(values={"image": {"gatewayRepository": "public.ecr.aws/b2z8n5q1/model-engine"}}),
     ["image.gatewayRepository is public.ecr.aws/b2z8n5q1/model-engine:" + TAG, "outside the site registry " + REG,
      "model_engine_images"]),
    ("latest utility image", dict(images={"frameworks": {"vllm": "0.11.0"}, "utility": {"busybox": "public.ecr.aws/docker/library/busybox:latest"}}),
     ["utilityImages.busybox is " + REG + "/public.ecr.aws/docker/library/busybox:latest (latest)",
      "pin a version in model_engine_images"]),
    ("pull policy Always", dict(values={"image": {"pullPolicy": "Always"}}),
     ["image.pullPolicy is Always", "Set image.pullPolicy: IfNotPresent"]),
    ("relative vllm repository (seed 001)", dict(values={"config": {"values": {"launch": {"vllm_repository": "vllm"}}}}),
     ["config.values.launch.vllm_repository is 'vllm'", "INITIALIZING", "Set it in model_engine_images"]),
    ("docker_repo_prefix", dict(values={"config": {"values": {"infra": {"docker_repo_prefix": "000000000000.dkr.ecr.us-east-1.amazonaws.com"}}}}),
     ["config.values.infra.docker_repo_prefix is '000000000000.dkr.ecr.us-east-1.amazonaws.com'", "Remove the override"]),
    ("inference framework latest", dict(values={"inferenceFramework": {"vllm": "latest"}}),
     ["inferenceFramework.vllm is 'latest'", "Set model_engine_images.frameworks.vllm to a pinned tag"]),
    ("scale to zero without Prometheus (seed 001)", dict(scale_to_zero=True),
     ["model_engine_scale_to_zero is true", "prometheus_server_address is empty", "silently broken",
      "Set model_engine_prometheus_address, or model_engine_scale_to_zero: false"]),
    ("Datadog tracing", dict(values={"dd_trace_enabled": True}),
     ["Datadog is on", "dd_trace_enabled=True", "Set all three to false"]),
    ("Datadog agent", dict(values={"datadog": {"enabled": True}}),
     ["Datadog is on (datadog.enabled=True", "Set all three to false"]),
    ("Istio VirtualService", dict(values={"virtualservice": {"enabled": True}}),
     ["Istio is on (virtualservice.enabled=True", "Set all three to false"]),
    ("Istio in the service config", dict(values={"config": {"values": {"launch": {"istio_enabled": True}}}}),
     ["config.values.launch.istio_enabled=True", "Set all three to false"]),
    ("Azure", dict(values={"azure": {"client_id": "x"}}), ["azure is set", "Remove it"]),
    ("prewarming pulls from registry.k8s.io", dict(values={"autoscaling": {"prewarming": {"enabled": True}}}),
     ["autoscaling.prewarming.enabled is true", "registry.k8s.io", "Set autoscaling.prewarming.enabled: false"]),
    ("celery autoscaler pulls Always", dict(values={"celery_autoscaler": {"enabled": True}}),
     ["celery_autoscaler.enabled is true", "imagePullPolicy: Always", "Set celery_autoscaler.enabled: false"]),
    ("gateway HPA on a custom metric", dict(values={"autoscaling": {"horizontal": {"enabled": True}}}),
     ["autoscaling.horizontal.enabled is true", "custom-metrics adapter", "replicaCount.gateway"]),
    ("GPU with no GpuType", dict(gpu_nodes=[{"name": "gpu-7", "labels": {"nvidia.com/gpu.product": "NVIDIA-H200"}}]),
     ["node gpu-7 has GPU product NVIDIA-H200", "has no model-engine GpuType", "Map it in model_engine_gpu_types"]),
    ("a GPU map to a name the chart does not know", dict(gpu_types={"NVIDIA-H200": "nvidia-hopper-h200"}),
     ["model_engine_gpu_types maps NVIDIA-H200 to 'nvidia-hopper-h200'", "use one of nvidia-tesla-t4"]),
    ("the chart's EKS node selector", dict(values={"nodeSelector": {"node-lifecycle": "normal"}}),
     ["nodeSelector has node-lifecycle: normal", "Set model_engine_node_selector"]),
    ("sensitive logs", dict(values={"config": {"values": {"launch": {"sensitive_log_mode": False}}}}),
     ["config.values.launch.sensitive_log_mode is False", "Set it to true"]),
    ("root pods", dict(pod_security_context={"runAsNonRoot": False}),
     ["podSecurityContext.runAsNonRoot is False", "model_engine_pod_security_context.runAsNonRoot: true"]),
    ("capabilities kept", dict(container_security_context={"allowPrivilegeEscalation": True}),
     ["containerSecurityContext must set allowPrivilegeEscalation: false and capabilities.drop: [ALL]"]),
    ("one namespace for both", dict(endpoint_namespace="llmops"),
     ["model_engine_endpoint_namespace is llmops, the release namespace", "Use another namespace"]),
    ("endpoint pods without a ServiceAccount", dict(values={"serviceTemplate": {"serviceAccountAnnotations": {"llmops.onprem/purpose": None}}}),
     ["serviceTemplate.serviceAccountAnnotations is empty", "Give it at least one annotation"]),
]


@pytest.mark.parametrize("settings,expected", [t[1:] for t in TRAPS], ids=[t[0] for t in TRAPS])
def test_each_trap_is_refused_naming_the_value_and_the_fix(settings, expected):
    problems = run(**settings)["problems"]
    assert problems, "no problem reported"
    text = "\n".join(problems)
    for want in expected:
        assert want in text, (want, problems)


def test_a_trap_is_reported_once_and_alone():
    problems = run(values={"celeryBrokerType": "sqs"})["problems"]
    assert len(problems) == 1 and problems[0].startswith("celeryBrokerType is 'sqs'")


def test_the_password_never_appears_in_a_problem():
    problems = run(values={"config": {"values": {"launch": {
        "cache_redis_onprem_url": "rediss://:hunter2@10.89.0.5:6379/0?ssl_cert_reqs=none"}}}})["problems"]
    assert len(problems) == 2 and "hunter2" not in "\n".join(problems)
    assert "rediss://:***@10.89.0.5" in problems[0]


def test_every_problem_is_reported_at_once():
    problems = run(values={"celeryBrokerType": "sqs", "datadog": {"enabled": True}, "db": {"runDbMigrationScript": False}},
                   scale_to_zero=True)["problems"]
    assert [p.split(" ")[0] for p in problems] == [
        "celeryBrokerType", "db.runDbMigrationScript", "Datadog", "model_engine_scale_to_zero"]


def test_scale_to_zero_with_prometheus_sets_the_address():
    out = run(scale_to_zero=True, prometheus_address="http://prometheus.monitoring.svc:9090")
    assert out["problems"] == []
    assert out["values"]["config"]["values"]["infra"]["prometheus_server_address"] == "http://prometheus.monitoring.svc:9090"


def test_an_unknown_gpu_mapped_in_the_inventory_is_labelled():
    out = run(gpu_nodes=[{"name": "gpu-7", "labels": {"nvidia.com/gpu.product": "NVIDIA-H200", "nvidia.com/gpu.memory": "143771"}}],
              gpu_types={"NVIDIA-H200": "nvidia-hopper-h100"})
    assert out["problems"] == []
    assert out["node_labels"][0]["labels"] == {"k8s.amazonaws.com/accelerator": "nvidia-hopper-h100"}
    assert out["values"]["recommendedHardware"]["byGpuMemoryGb"][0]["gpu_memory_le"] == 140


def test_an_inventory_node_selector_replaces_the_eks_default():
    out = run(node_selector={"llmops.onprem/control-plane": "true"})
    assert out["problems"] == []
    assert out["values"]["nodeSelector"] == {"llmops.onprem/control-plane": "true", "node-lifecycle": None}


def test_a_bad_image_reference_names_the_setting():
    out = run(images={"repository": "Public.ECR/Upper Case"})
    assert out["values"] == {}
    assert out["problems"] == ["model_engine_images: image reference 'Public.ECR/Upper Case:%s' has an invalid "
                               "repository 'Upper Case' (lowercase letters, digits, separators '.', '_', '__', '-', "
                               "path components joined by '/')" % TAG]


def test_settings_must_be_a_dict():
    with pytest.raises(AnsibleFilterError, match=r"^model_engine_values: the settings must be a dict, got list$"):
        model_engine_values([])
    assert FilterModule().filters() == {"model_engine_values": model_engine_values}


# The bundle side: the same image settings give the bundle's list.
def test_bundle_images_from_the_same_settings():
    assert model_engine_images({"frameworks": {"vllm": "0.11.0", "tensorrt_llm": "0.21.0"}, "triton_tag": "abc"}) == sorted([
        "public.ecr.aws/b2z8n5q1/model-engine:" + TAG,
        "public.ecr.aws/b2z8n5q1/vllm:0.11.0",
        "public.ecr.aws/b2z8n5q1/tensorrt-llm:0.21.0",
        "public.ecr.aws/b2z8n5q1/llm-engine/batch-infer-vllm:0.17.1-batch",
        "public.ecr.aws/b2z8n5q1/std-ml-srv:abc",
        "public.ecr.aws/docker/library/busybox:1.36.1",
        "docker.io/curlimages/curl:7.72.0",
        "public.ecr.aws/ubuntu/ubuntu:22.04",
    ])
    assert model_engine_images({}, REG)[0].startswith(REG + "/")
    # The role's images for the same settings are the same references.
    assert sorted(i["upstream"] for i in run(images={"frameworks": {"vllm": "0.11.0"}})["images"]) == \
        model_engine_images({"frameworks": {"vllm": "0.11.0"}})


def test_bundle_images_refuses_a_non_dict():
    with pytest.raises(AnsibleFilterError, match=r"^model_engine_images: the image settings must be a dict, got str$"):
        model_engine_images("public.ecr.aws/b2z8n5q1/vllm")


def test_missing_images_compares_normalised_references():
    wanted = run()["images"]
    have = ["public.ecr.aws/b2z8n5q1/model-engine:" + TAG, "curlimages/curl:7.72.0"]  # short docker.io name
    missing = model_engine_missing_images(wanted, have)
    assert [m["upstream"] for m in missing] == [
        "public.ecr.aws/b2z8n5q1/vllm:0.11.0", "public.ecr.aws/b2z8n5q1/llm-engine/batch-infer-vllm:0.17.1-batch",
        "public.ecr.aws/docker/library/busybox:1.36.1", "public.ecr.aws/ubuntu/ubuntu:22.04"]
    assert model_engine_missing_images(wanted, [w["upstream"] for w in wanted]) == []


def _deploy(name, image, policy="IfNotPresent"):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"template": {"spec": {"containers": [{"name": "main", "image": image, "imagePullPolicy": policy}]}}}}


def test_render_check_names_each_bad_object():
    wanted = run()["images"]
    site = REG + "/public.ecr.aws/b2z8n5q1/model-engine:" + TAG
    docs = [
        _deploy("ok", site),
        _deploy("vendor", "registry.k8s.io/cpa/cluster-proportional-autoscaler:1.8.5"),
        _deploy("moving", REG + "/docker.io/library/busybox:latest", policy="Always"),
        {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin", "metadata": {"name": "attributegen"},
         "spec": {"url": "https://storage.googleapis.com/istio-build/proxy/x.wasm"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "templates"},
         "data": {"t.yaml": "# see https://github.com/x/y/pull/1\n- image: %s/public.ecr.aws/b2z8n5q1/model-engine:${GIT_TAG}\n"
                            "  env: http://model-engine.llmops:80\n" % REG}},
    ]
    out = model_engine_render_check(docs, TAG, wanted, REG, ["llmops", "llmops-endpoints"])
    assert out["problems"] == [
        "apps/v1 Deployment/vendor container main names registry.k8s.io/cpa/cluster-proportional-autoscaler:1.8.5, "
        "outside the site registry %s: set it through model_engine_images" % REG,
        "apps/v1 Deployment/moving container main names %s/docker.io/library/busybox:latest, which is not among the "
        "images the role maps (model_engine_images)" % REG,
        "apps/v1 Deployment/moving container main names %s/docker.io/library/busybox:latest (latest): pin a version" % REG,
        "apps/v1 Deployment/moving container main has imagePullPolicy: Always",
        "public URL in extensions.istio.io/v1alpha1 WasmPlugin/attributegen: "
        "https://storage.googleapis.com/istio-build/proxy/x.wasm (spec.url)",
        "Istio object extensions.istio.io/v1alpha1 WasmPlugin/attributegen is rendered, and the site has no Istio",
    ]
    assert [i["image"] for i in out["images"]][-1] == site  # ${GIT_TAG} filled in the endpoint template


def test_the_sites_own_host_names_are_not_public():
    out = run(object_store=dict(SETTINGS["object_store"], s3_endpoint_url="https://s3.corp.example.com:9000"))
    assert out["problems"] == []
    assert "s3.corp.example.com" in out["site_hosts"]
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
          "data": {"a": "https://s3.corp.example.com:9000/llm-engine", "b": "https://pypi.org/simple"}}
    check = model_engine_render_check([cm], TAG, out["images"], REG, [], out["site_hosts"])
    assert check["problems"] == ["public URL in v1 ConfigMap/c: https://pypi.org/simple (data.b)"]


def test_gpu_types_follow_the_gpu_stages_table():
    nodes = [{"name": "a", "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}},
             {"name": "b", "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-PCIE", "nvidia.com/gpu.memory": "40960"}},
             {"name": "c", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-MIG-3g.40gb"}},
             {"name": "cpu-1", "labels": {"kubernetes.io/arch": "amd64"}}]
    out = run(gpu_nodes=nodes)
    assert out["problems"] == []
    assert [(n["node"], n["labels"]["k8s.amazonaws.com/accelerator"]) for n in out["node_labels"]] == [
        ("a", "nvidia-ampere-a100e"), ("b", "nvidia-ampere-a100"), ("c", "nvidia-hopper-h100-3g40gb")]


# --- The Secrets, ConfigMaps and keys the rendered pods read, against the live cluster -----------------------

def _pod_doc(kind, name, spec, namespace=None):
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": {"template": {"spec": spec}}}


RENDERED = [
    _pod_doc("Deployment", "model-engine", {
        "imagePullSecrets": [{"name": "llmops-registry-pull"}],
        "containers": [{"name": "main", "image": "x", "env": [
            {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "llm-engine-postgres-credentials", "key": "database_url"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "maybe", "key": "k", "optional": True}}},
            {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "site-settings", "key": "zone"}}}],
            "envFrom": [{"secretRef": {"name": "model-engine-object-store"}}]}],
        "volumes": [{"name": "ca", "secret": {"secretName": "llmops-site-ca"}},
                    {"name": "cfg", "configMap": {"name": "model-engine-service-config",
                                                  "items": [{"key": "launch_service_config", "path": "a.yaml"}]}},
                    {"name": "aws", "configMap": {"name": "model-engine-aws-config"}}]}),
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "model-engine-service-config"}, "data": {}},
]


def test_references_name_every_secret_configmap_and_key_except_the_charts_own_and_optional_ones():
    refs = model_engine_render_check(RENDERED, TAG, [], REG, ["llmops", "llmops-endpoints"])["references"]
    assert [(r["kind"], r["namespace"], r["name"], r["key"]) for r in refs] == [
        ("ConfigMap", "llmops", "model-engine-aws-config", None),
        ("ConfigMap", "llmops", "site-settings", "zone"),
        ("Secret", "llmops", "llm-engine-postgres-credentials", "database_url"),
        ("Secret", "llmops", "llmops-registry-pull", None),
        ("Secret", "llmops", "llmops-site-ca", None),
        ("Secret", "llmops", "model-engine-object-store", None)]
    assert refs[2]["where"] == "apps/v1 Deployment/model-engine"


def _live(kind, name, keys, namespace="llmops"):
    return {"kind": kind, "metadata": {"name": name, "namespace": namespace}, "data": dict((k, "eA==") for k in keys)}


def test_reference_problems_name_the_missing_object_and_the_missing_key_with_the_fix():
    from ansible_collections.llmops.onprem.plugins.filter.model_engine_reference_problems import (
        model_engine_reference_problems)
    refs = model_engine_render_check(RENDERED, TAG, [], REG, ["llmops"])["references"]
    live = [_live("Secret", "llm-engine-postgres-credentials", ["DATABASE_URL"]), _live("Secret", "llmops-site-ca", ["ca.crt"]),
            _live("ConfigMap", "site-settings", ["zone"]),
            _live("Secret", "llmops-registry-pull", ["x"], namespace="elsewhere")]
    created = [["ConfigMap", "llmops", "model-engine-aws-config"], ["Secret", "llmops", "model-engine-object-store"]]
    assert model_engine_reference_problems(refs, live, created) == [
        "Secret llm-engine-postgres-credentials in namespace llmops has no key database_url, which apps/v1 "
        "Deployment/model-engine reads (it has: DATABASE_URL): correct the key the earlier stage names, or run "
        "cluster_secrets again",
        "Secret llmops-registry-pull in namespace llmops, which apps/v1 Deployment/model-engine reads, does not exist: "
        "run the cluster_secrets stage (it writes the stack's Secrets)"]
    live.append(_live("Secret", "llmops-registry-pull", [".dockerconfigjson"]))
    live[0] = _live("Secret", "llm-engine-postgres-credentials", ["database_url"])
    assert model_engine_reference_problems(refs, live, created) == []
    # Without the role's own objects declared, they are named too.
    assert [p.split(",")[0] for p in model_engine_reference_problems(refs, live, [])] == [
        "ConfigMap model-engine-aws-config in namespace llmops", "Secret model-engine-object-store in namespace llmops"]
