"""The model_engine role against the REAL vendor chart (../shared/upstream/model-engine, scaleapi's
llm-engine) and the real helm, without a cluster: the values it writes render to objects that pass
current Kubernetes schemas, name only pinned site-registry images, no public URL, no pull policy
Always, no Istio object; the migration hook Job is there and the service config says onprem. Then
the honest refusal: the bundle lacks the vendor's images, and the role stops before helm install
listing each one. A trap set in the inventory is refused with its fix, before anything is written."""
import json
import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HERE = os.path.dirname(os.path.abspath(__file__))
VENDOR_CHART = os.path.normpath(os.path.join(ROOT, "..", "shared", "upstream", "model-engine"))
HELM = os.environ.get("HELM", os.path.join(ROOT, ".tools", "bin", "helm"))
VENV_BIN = os.path.dirname(sys.executable)
REGISTRY = "registry.site.internal:5000"
TAG = "e360bfb1d21d9d4e7b7fcb6b29ca752095b4d0f4"
ALL_IMAGES = [
    "public.ecr.aws/b2z8n5q1/model-engine:" + TAG,
    "public.ecr.aws/b2z8n5q1/vllm:0.11.0",
    "public.ecr.aws/b2z8n5q1/llm-engine/batch-infer-vllm:0.17.1-batch",
    "public.ecr.aws/docker/library/busybox:1.36.1",
    "docker.io/curlimages/curl:7.72.0",
    "public.ecr.aws/ubuntu/ubuntu:22.04",
]


@pytest.fixture(autouse=True)
def _tools():
    if not os.access(HELM, os.X_OK):
        pytest.fail("helm not found at %s: run make setup (or set HELM)" % HELM)
    if not os.path.isfile(os.path.join(VENDOR_CHART, "Chart.yaml")):
        pytest.fail("the vendor chart is not at %s (../shared/upstream/model-engine)" % VENDOR_CHART)


def role(tmp_path, bundle_images, check=False, **overrides):
    env = dict(os.environ)
    env.update(ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".cache", "collections"),
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", ANSIBLE_NOCOLOR="1",
               PATH=os.path.dirname(HELM) + os.pathsep + VENV_BIN + os.pathsep + env.get("PATH", ""))
    extra = dict(me_chart=VENDOR_CHART, me_private_dir=str(tmp_path / "private"), me_bundle_images=bundle_images,
                 ansible_python_interpreter=sys.executable, **overrides)
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", os.path.join(HERE, "playbooks", "role.yml"),
           "-e", json.dumps(extra)] + (["--check", "--diff"] if check else [])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=ROOT)


def render(chart, values_file, namespace="llmops"):
    p = subprocess.run([HELM, "template", "model-engine", chart, "-n", namespace, "-f", values_file],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout, [d for d in yaml.safe_load_all(p.stdout) if d]


def pod_specs(doc):
    tpl = (doc.get("spec") or {}).get("template", {}).get("spec")
    return [tpl] if tpl else []


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """The role run once with every image in the bundle: values written, the work copy rendered."""
    tmp = tmp_path_factory.mktemp("planned")
    proc = role(tmp, ALL_IMAGES)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "nothing was installed" in proc.stdout
    values_file = str(tmp / "private" / "values.yaml")
    text, docs = render(str(tmp / "private" / "chart"), values_file)
    return dict(tmp=tmp, proc=proc, values_file=values_file, text=text, docs=docs,
                values=yaml.safe_load(open(values_file)))


def test_values_file_is_private(planned):
    assert os.stat(planned["values_file"]).st_mode & 0o777 == 0o600
    assert os.stat(planned["tmp"] / "private").st_mode & 0o777 == 0o700


def test_a_second_run_changes_nothing(planned):
    """The values file and the work copy of the chart (one rsync, the Istio metrics template left out) are as the
    first run left them."""
    proc = role(planned["tmp"], ALL_IMAGES)
    assert proc.returncode == 0, proc.stdout[-3000:]
    recap = [line for line in proc.stdout.splitlines() if line.startswith("localhost ") and "changed=" in line]
    assert recap and " changed=0 " in recap[-1], proc.stdout[-3000:]
    assert not (planned["tmp"] / "private" / "chart" / "templates" / "istio-metrics.yaml").exists()
    assert (planned["tmp"] / "private" / "chart" / "templates" / "istio-virtualservice.yaml").is_file()


def test_every_object_passes_current_kubernetes_schemas(planned, tmp_path):
    from kubernetes_validate.utils import latest_version
    out = tmp_path / "rendered.yaml"
    out.write_text(planned["text"])
    p = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", latest_version(), str(out)],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Couldn't find schema" not in p.stdout + p.stderr
    assert len(planned["docs"]) >= 15


def test_images_are_pinned_and_in_the_site_registry(planned):
    images = []
    for d in planned["docs"]:
        for spec in pod_specs(d):
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                images.append(c["image"])
                assert c.get("imagePullPolicy") in ("IfNotPresent", None), (d["metadata"]["name"], c)
        if d["kind"] == "ConfigMap":
            for text in (d.get("data") or {}).values():
                for line in text.splitlines():
                    if line.strip().startswith(("image:", "- image:")):
                        ref = line.split("image:", 1)[1].strip()
                        if not ref.startswith("${"):
                            images.append(ref.replace("${GIT_TAG}", TAG))
                    assert "imagePullPolicy: Always" not in line
    assert images
    for ref in images:
        assert ref.startswith(REGISTRY + "/"), ref
        tag = ref.rpartition(":")[2]
        assert "/" not in tag and tag and tag != "latest", ref
    assert REGISTRY + "/public.ecr.aws/b2z8n5q1/model-engine:" + TAG in images
    assert REGISTRY + "/docker.io/curlimages/curl:7.72.0" in images  # the endpoint templates' utility image


def test_no_istio_object_and_no_public_url(planned):
    assert not [d for d in planned["docs"] if "istio.io" in d["apiVersion"]]
    # The vendor's chart itself renders them (no toggle): the role's work copy is what drops them.
    _text, vendor = render(VENDOR_CHART, planned["values_file"])
    assert sorted(d["kind"] for d in vendor if "istio.io" in d["apiVersion"]) == ["Telemetry", "WasmPlugin"]
    assert "storage.googleapis.com" not in planned["text"]
    assert "amazonaws.com/" not in planned["text"].replace("k8s.amazonaws.com/accelerator", "")
    assert "public.ecr.aws/b2z8n5q1" not in planned["text"].replace(REGISTRY + "/public.ecr.aws", "")


def test_migration_hook_job_and_onprem_service_config(planned):
    jobs = [d for d in planned["docs"] if d["kind"] == "Job"]
    assert [j["metadata"]["annotations"]["helm.sh/hook"] for j in jobs] == ["pre-install,pre-upgrade"]
    env = dict((e["name"], e) for e in pod_specs(jobs[0])[0]["containers"][0]["env"])
    assert env["ML_INFRA_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "llm-engine-postgres-credentials", "key": "database_url"}
    configs = [d for d in planned["docs"] if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "model-engine-service-config"]
    assert sorted(c["metadata"].get("namespace", "llmops") for c in configs) == ["llmops", "llmops-endpoints"]
    infra = yaml.safe_load(configs[0]["data"]["infra_service_config"])
    launch = yaml.safe_load(configs[0]["data"]["launch_service_config"])
    assert infra["cloud_provider"] == "onprem"
    assert infra["celery_broker_type_redis"] is True
    assert infra["docker_repo_prefix"] == REGISTRY
    assert launch["vllm_repository"] == REGISTRY + "/public.ecr.aws/b2z8n5q1/vllm"
    assert launch["sensitive_log_mode"] is True and launch["istio_enabled"] is False
    assert launch["cache_redis_onprem_url"] == (
        "rediss://10.89.0.5:6379/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/llmops/site-ca/ca.crt")


def test_every_container_with_the_database_url_mounts_the_ca_it_names(planned):
    """cluster_secrets appends sslrootcert=/etc/llmops/site-ca/ca.crt to the database URL (its default):
    each container that reads the URL (gateway, builder, cacher, the migration hook) must mount the
    site CA there, or sslmode=verify-full refuses to connect (issue 19 item 7)."""
    defaults = yaml.safe_load(open(os.path.join(ROOT, "roles", "cluster_secrets", "defaults", "main.yml")))
    ca_dir = os.path.dirname(defaults["cluster_secrets_postgres_sslrootcert"])
    readers = []
    for d in planned["docs"]:
        for spec in pod_specs(d):
            volumes = dict((v["name"], v) for v in spec.get("volumes") or [])
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                if "ML_INFRA_DATABASE_URL" not in [e["name"] for e in c.get("env") or []]:
                    continue
                readers.append("%s/%s" % (d["metadata"]["name"], c["name"]))
                mounts = dict((m["mountPath"], m["name"]) for m in c.get("volumeMounts") or [])
                assert ca_dir in mounts, (d["metadata"]["name"], c["name"], sorted(mounts))
                assert volumes[mounts[ca_dir]]["secret"]["secretName"] == "llmops-site-ca", d["metadata"]["name"]
    assert len(readers) >= 4, readers


def test_redis_password_only_by_secret_reference(planned):
    gw = [d for d in planned["docs"] if d["kind"] == "Deployment" and d["metadata"]["name"] == "model-engine"][0]
    c = pod_specs(gw)[0]["containers"][0]
    names = [e["name"] for e in c["env"]]
    env = dict((e["name"], e) for e in c["env"])
    assert env["REDIS_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "llmops-redis-auth", "key": "auth-token"}
    # $(REDIS_AUTH_TOKEN) expands only from a variable defined earlier in the list.
    assert names.index("REDIS_AUTH_TOKEN") < names.index("CELERY_BROKER_URL")
    assert env["CELERY_BROKER_URL"]["value"].startswith("rediss://:$(REDIS_AUTH_TOKEN)@10.89.0.5:6379/0?ssl_cert_reqs=required")
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "model-engine-object-storage-config", "key": "secret-key"}
    assert env["S3_ENDPOINT_URL"]["value"] == "https://10.89.0.6:9000"
    mounts = dict((m["name"], m["mountPath"]) for m in c["volumeMounts"])
    assert mounts["llmops-site-ca"] == "/etc/llmops/site-ca"
    assert "ssl_cert_reqs=none" not in planned["text"]


def test_gpu_placement_from_the_site_inventory(planned):
    balloons = [d for d in planned["docs"] if d["metadata"]["name"].startswith("model-engine-balloon-")]
    assert [pod_specs(b)[0]["nodeSelector"] for b in balloons] == [{"k8s.amazonaws.com/accelerator": "nvidia-ampere-a100e"}]
    gw = [d for d in planned["docs"] if d["kind"] == "Deployment" and d["metadata"]["name"] == "model-engine"][0]
    assert "nodeSelector" not in pod_specs(gw)[0]  # the chart's node-lifecycle: normal is gone
    hw = [d for d in planned["docs"] if d["metadata"]["name"] == "model-engine-recommended-hardware-config"][0]
    tiers = yaml.safe_load(hw["data"]["byGpuMemoryGb"])
    assert [(t["gpus"], t["gpu_memory_le"], t["gpu_type"]) for t in tiers] == [
        (1, 80, "nvidia-ampere-a100e"), (2, 160, "nvidia-ampere-a100e"), (4, 320, "nvidia-ampere-a100e"),
        (8, 640, "nvidia-ampere-a100e")]
    sec = pod_specs(gw)[0]["securityContext"]
    assert sec["runAsNonRoot"] is True
    assert pod_specs(gw)[0]["containers"][0]["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_missing_images_refusal_lists_each_image(tmp_path):
    bundle = ["public.ecr.aws/b2z8n5q1/model-engine:" + TAG, "docker.io/curlimages/curl:7.72.0"]
    proc = role(tmp_path, bundle)
    assert proc.returncode != 0
    out = proc.stdout
    assert "the bundle does not carry 4 of the 6 images model-engine names" in out
    assert "stopping before helm install" in out
    for ref in ALL_IMAGES:
        listed = ref + " ("
        assert (listed in out) == (ref not in bundle), ref
    assert "public.ecr.aws/b2z8n5q1/vllm:0.11.0 (inferenceFramework.vllm (vllm_repository))" in out
    # The plan ran for real: values written, the chart rendered and checked.
    assert (tmp_path / "private" / "values.yaml").is_file()
    assert "Install model-engine" not in out


def test_a_trap_in_the_inventory_is_refused_before_anything_is_written(tmp_path):
    proc = role(tmp_path, ALL_IMAGES, model_engine_values={"celeryBrokerType": "redis", "image": {"pullPolicy": "Always"}},
                model_engine_gpu_nodes=[{"name": "gpu-9", "product": "NVIDIA-H200"}])
    assert proc.returncode != 0
    out = proc.stdout
    assert "3 problem(s) with the model-engine settings; nothing was installed" in out
    assert "celeryBrokerType is 'redis'" in out and "Set celeryBrokerType: elasticache" in out
    assert "image.pullPolicy is Always" in out and "Set image.pullPolicy: IfNotPresent" in out
    assert "node gpu-9 has GPU product NVIDIA-H200" in out and "model_engine_gpu_types" in out
    assert not (tmp_path / "private").exists()


def test_check_mode_shows_the_values_diff_and_writes_nothing(tmp_path):
    proc = role(tmp_path, ALL_IMAGES, check=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "+celeryBrokerType: elasticache" in proc.stdout
    assert not (tmp_path / "private" / "values.yaml").exists()


def test_site_yml_runs_the_stage_up_to_the_honest_refusal(tmp_path):
    """site.yml with the stage switched on, no cluster and no bundle: the values are written, the real chart is
    rendered and checked, and the stage stops before helm install naming every image the bundle must carry."""
    inv = tmp_path / "site"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text("---\nall:\n  hosts: {}\n", encoding="utf-8")
    play = yaml.safe_load(open(os.path.join(HERE, "playbooks", "role.yml")))[0]["vars"]
    play.update(model_engine_enabled=True, model_engine_chart=VENDOR_CHART,
                model_engine_private_dir=str(tmp_path / "private"), ansible_python_interpreter=sys.executable)
    del play["model_engine_bundle_images"]  # the default: the imported bundle's images (none here)
    (inv / "group_vars" / "all" / "site.yml").write_text(yaml.safe_dump(play), encoding="utf-8")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
               PATH=os.path.dirname(HELM) + os.pathsep + VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    p = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", str(inv), "playbooks/site.yml"],
                       cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 2, p.stdout[-3000:] + p.stderr[-2000:]
    assert "PLAY [Stage model_engine" in p.stdout
    assert "the bundle does not carry 6 of the 6 images model-engine names" in p.stdout
    for ref in ALL_IMAGES:
        assert ref + " (" in p.stdout, ref
    assert (tmp_path / "private" / "values.yaml").is_file()
    assert "PLAY [Stage vllm_serving" not in p.stdout


def test_gpu_facts_of_the_gpu_stages_are_read_and_an_h200_is_refused(tmp_path):
    """llmops_site.gpu.nodes (the gpu_operator stage's facts) feed the GPU inventory; an H200 has no GpuType."""
    facts = [{"node": "gpu-2", "product": "NVIDIA-H200", "count": 8, "memory_mib": 143771, "gpu_type": "",
              "labels": {"nvidia.com/gpu.product": "NVIDIA-H200", "nvidia.com/gpu.count": "8"}}]
    proc = role(tmp_path, ALL_IMAGES, model_engine_gpu_nodes=[], model_engine_site_gpu_nodes=facts)
    assert proc.returncode != 0
    assert "1 problem(s) with the model-engine settings; nothing was installed" in proc.stdout
    assert "node gpu-2 has GPU product NVIDIA-H200 (label nvidia.com/gpu.product), which has no model-engine GpuType" in proc.stdout
    assert not (tmp_path / "private").exists()
    proc = role(tmp_path, ALL_IMAGES, model_engine_gpu_nodes=[], model_engine_site_gpu_nodes=facts,
                model_engine_gpu_types={"NVIDIA-H200": "nvidia-hopper-h100"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    values = yaml.safe_load(open(tmp_path / "private" / "values.yaml"))
    assert values["balloons"] == [{"acceleratorName": "nvidia-hopper-h100", "gpuCount": 1, "replicaCount": 0}]
    assert values["recommendedHardware"]["byGpuMemoryGb"][-1]["gpu_memory_le"] == 140 * 8
