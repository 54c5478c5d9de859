"""site.yml's GPU operator and model-engine stages on the lab cluster (Kubernetes 1.20), with the vendors' real
charts (../shared/upstream/gpu-operator and model-engine, as a bundle carries them) and real helm, up to their honest
refusals: the lab cannot have the vendors' images (nvcr.io, public.ecr.aws), so both stages must stop before
installing and list them. Everything that needs no image runs for real against the API server:

- gpu_operator: the chart's CRDs applied (the ones a 1.20 API server takes; the ones with CEL rules are named as
  needing Kubernetes 1.25), the ClusterPolicy the values produce dry-run server-side against its CRD (nothing stored),
  and a wrong value refused by the API server with the CRD's own message;
- model_engine: the values from the earlier stages' records and the node's GPU labels, the real chart rendered, and
  every Secret, ConfigMap and key the rendered pods read checked against the live cluster after cluster_secrets;
  a missing key and a GPU with no model-engine GpuType are named before anything is installed.

No GPU here: the node carries GPU feature discovery's labels and nvidia.com/gpu from tests/cluster/fake-gpu.sh. The
service hosts are not contacted (only the controller's stages run, by tags); their stages' records are seeded in the
site's state file as those stages write them. Postgres is a TCP listener on loopback: the stage's check reads only that
the address answers (the database itself is tested by test_cluster_secrets.py).
"""
import base64
import json
import os
import re
import secrets
import socket
from pathlib import Path

import pytest
import yaml
from kubernetes.client.rest import ApiException

SHARED = Path(__file__).resolve().parents[4] / "shared" / "upstream"
GPU_CHART, ME_CHART = SHARED / "gpu-operator", SHARED / "model-engine"
PRODUCT = "NVIDIA-H100-80GB-HBM3"
REGISTRY = "10.89.0.6:5000"
# The CRDs a 1.20 API server takes (no CEL rules), and the ones the stage names as needing 1.25.
APPLIED = ["clusterpolicies.nvidia.com", "computedomaincliques.resource.nvidia.com", "nodefeaturegroups.nfd.k8s-sigs.io",
           "nodefeaturerules.nfd.k8s-sigs.io", "nodefeatures.nfd.k8s-sigs.io"]
NEED_125 = ["computedomains.resource.nvidia.com", "nvidiadrivers.nvidia.com", "gpuclusters.nvidia.com"]
ME_TAG = "e360bfb1d21d9d4e7b7fcb6b29ca752095b4d0f4"


def _private(path, text):
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module")
def gpu_node(kube):
    kube.run([kube.CLUSTER / "fake-gpu.sh", "1", PRODUCT])
    yield
    kube.run([kube.CLUSTER / "fake-gpu.sh", "0"])


@pytest.fixture(scope="module")
def postgres_port():
    """Where the stage's Postgres check connects: a listener on loopback that accepts and says nothing."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture(scope="module")
def site(kube, tmp_path_factory, gpu_node, postgres_port):
    """An inventory with one service host (never contacted), the records the earlier stages leave in the site's
    state file, their private files, and the lab cluster's kubeconfig."""
    for chart in (GPU_CHART, ME_CHART):
        if not (chart / "Chart.yaml").is_file():
            pytest.fail("the vendor chart is not at %s (../shared/upstream)" % chart)
    inv = tmp_path_factory.mktemp("gpu-me") / "site"
    priv = inv / ".private"
    ns = "t-me-" + secrets.token_hex(3)
    ca = kube.cluster_dir / "pki" / "ca.crt"
    files = dict(
        ca=_private(priv / "pki" / "ca.crt", ca.read_text()),
        redis=_private(priv / "redis" / "password", secrets.token_urlsafe(30)),
        pull=_private(priv / "registry" / "pull-secret.json", json.dumps({"auths": {REGISTRY: {"auth": base64.b64encode(
            b"llmops-pull:" + secrets.token_urlsafe(24).encode()).decode()}}})),
        pg=_private(priv / "postgres" / "llm_engine", secrets.token_urlsafe(30)),
        rw_a=_private(priv / "minio" / "readwrite" / "access-key", "rw" + secrets.token_hex(8)),
        rw_s=_private(priv / "minio" / "readwrite" / "secret-key", secrets.token_urlsafe(30)),
        ro_a=_private(priv / "minio" / "readonly" / "access-key", "ro" + secrets.token_hex(8)),
        ro_s=_private(priv / "minio" / "readonly" / "secret-key", secrets.token_urlsafe(30)))
    store = "https://10.89.0.6:9000"
    state = {
        "pki": {"ca_file": files["ca"], "hosts_ca_file": "/etc/llmops/pki/llmops-onprem-ca.crt"},
        "redis": {"ca_file": files["ca"], "host": "10.89.0.6", "port": 6379, "tls": True, "inventory_host": "svc-1",
                  "password_file": files["redis"], "k8s_secret": {"name": "llmops-redis-auth", "key": "auth-token"}},
        "registry": {"registry_host": REGISTRY, "inventory_host": "svc-1", "ca_file": files["ca"],
                     "k8s_pull_secret": {"name": "llmops-registry-pull", "file": files["pull"], "key": ".dockerconfigjson",
                                         "type": "kubernetes.io/dockerconfigjson"}},
        "postgres": {"host": "127.0.0.1", "port": postgres_port, "inventory_host": "svc-1", "password_file": files["pg"],
                     "database_url_template": "postgresql://llm_engine:{password}@127.0.0.1:%d/llm_engine?sslmode="
                                              "verify-full" % postgres_port,
                     "k8s_secret": {"name": "llm-engine-postgres-credentials", "key": "database_url"}},
        "minio": {"s3_endpoint_url": store, "region": "us-east-1", "inventory_host": "svc-1", "ca_file": files["ca"],
                  "buckets": {"checkpoints": "model-checkpoints", "model_engine": "llm-engine"},
                  "model_engine": {"s3_bucket": "llm-engine", "default_region": "us-east-1",
                                   "s3_file_llm_fine_tuning_job_repository": "s3://llm-engine/llm-ft-job-repository",
                                   "hf_user_fine_tuned_weights_prefix": "s3://llm-engine/fine_tuned_weights"},
                  "credentials": {
                      "readwrite": {"access_key_file": files["rw_a"], "secret_key_file": files["rw_s"], "k8s_secret": {
                          "name": "model-engine-object-storage-config", "access_key_key": "access-key",
                          "secret_key_key": "secret-key"}},
                      "readonly": {"access_key_file": files["ro_a"], "secret_key_file": files["ro_s"], "k8s_secret": {
                          "name": "llmops-serving-object-storage", "access_key_key": "access-key",
                          "secret_key_key": "secret-key"}}}},
    }
    _private(priv / "site-state.json", json.dumps(state))
    priv.chmod(0o700)
    svc = {"ansible_connection": "local", "ansible_python_interpreter": kube.PYTHON}
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": kube.PYTHON}},
        "children": dict((g, {"hosts": {"svc-1": svc}}) for g in ("redis", "registry", "postgres", "minio"))}}))
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "group_vars" / "all" / "site.yml").write_text(yaml.safe_dump(dict(
        llmops_kubeconfig=kube.kubeconfig, cluster_secrets_namespace=ns,
        llmops_gpu_layer=True, gpu_operator_chart=str(GPU_CHART), gpu_operator_helm_binary=kube.HELM,
        gpu_operator_bundle_images=[],
        vllm_serving_helm_binary=kube.HELM,
        model_engine_enabled=True, model_engine_chart=str(ME_CHART), model_engine_helm_binary=kube.HELM,
        model_engine_bundle_images=[], model_engine_endpoint_namespace=ns + "-ep",
        model_engine_images={"frameworks": {"vllm": "0.11.0"}})))
    yield dict(inventory=inv, namespace=ns, private=priv, secrets=[Path(f).read_text() for k, f in files.items() if k != "ca"])
    for name in APPLIED:
        try:
            kube.k8s.ApiextensionsV1Api().delete_custom_resource_definition(name)
        except ApiException as e:
            if e.status != 404:
                raise
    for name in (ns, ns + "-ep"):
        kube.delete_namespace(name)


def site_yml(kube, site, *args, playbook="site.yml"):
    env = dict(os.environ, ANSIBLE_CONFIG=str(kube.REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=str(kube.REPO / ".cache" / "collections"))
    p = kube.run([Path(kube.PYTHON).parent / "ansible-playbook", "-i", site["inventory"],
                  kube.REPO / "playbooks" / playbook, *args], check=False, env=env, cwd=kube.REPO)
    out = p.stdout + p.stderr
    for value in site["secrets"]:
        assert value not in out, "a secret appears in the output"
    return p.returncode, re.sub(r"\s+", " ", out)


def crd_established(kube, name):
    crd = kube.k8s.ApiextensionsV1Api().read_custom_resource_definition(name)
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def cluster_policies(kube):
    return kube.k8s.CustomObjectsApi().list_cluster_custom_object("nvidia.com", "v1", "clusterpolicies")["items"]


def release_absent(kube, ns):
    """No helm release in any state (helm keeps each release's record as a Secret labelled owner=helm)."""
    return kube.core.list_namespaced_secret(ns, label_selector="owner=helm").items == []


def namespace_absent(kube, name):
    try:
        kube.core.read_namespace(name)
    except ApiException as e:
        return e.status == 404
    return False


def test_site_runs_the_gpu_operator_and_model_engine_stages_up_to_their_honest_refusals(kube, site):
    ns = site["namespace"]
    rc, out = site_yml(kube, site, "--tags", "cluster_secrets,gpu_operator")
    assert rc == 2, out[-6000:]
    # cluster_secrets ran first and wrote the stack's Secrets.
    names = sorted(s.metadata.name for s in kube.core.list_namespaced_secret(ns).items if s.type != "kubernetes.io/service-account-token")
    assert names == ["llm-engine-postgres-credentials", "llmops-redis-auth", "llmops-registry-pull", "llmops-serving-object-storage",
                     "llmops-site-ca", "model-engine-object-storage-config"], names
    # gpu_operator: the CRDs this API server takes are applied and Established, the ClusterPolicy was a dry run.
    assert "Send the ClusterPolicy as a server-side dry run" in out and "Refuse a ClusterPolicy" not in out
    for name in APPLIED:
        assert crd_established(kube, name), name
    assert cluster_policies(kube) == []
    msg = out.split("gpu_operator: the bundle lacks", 1)[1].split("Nothing was installed.", 1)[0]
    assert msg.startswith(" 7 of the 7 images the GPU operator v26.7.0 needs in host mode: "), msg
    for image in ("nvcr.io/nvidia/gpu-operator:v26.7.0", "nvcr.io/nvidia/k8s-device-plugin:v0.20.0",
                  "nvcr.io/nvidia/k8s/container-toolkit:v1.20.0", "nvcr.io/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless",
                  "nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.12.0", "nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.15.0",
                  "registry.k8s.io/nfd/node-feature-discovery:v0.19.0"):
        assert image in msg, (image, msg)
    assert ("The chart's CRDs %s carry CEL validation rules (x-kubernetes-validations), which the API server accepts from "
            "Kubernetes 1.25; this cluster runs 1.20.2" % ", ".join(NEED_125)) in msg, msg
    assert namespace_absent(kube, "gpu-operator") and release_absent(kube, "gpu-operator")

    # model_engine, alone by its tag (cluster_secrets' record is in the state file now).
    rc, out = site_yml(kube, site, "--tags", "model_engine")
    assert rc == 2, out[-6000:]
    # Every Secret, ConfigMap and key the rendered pods read is in the live cluster (the role's own check passed).
    assert ("model_engine: the cluster holds every Secret, ConfigMap and key the rendered pods read (" in out), out[-6000:]
    held = out.split("the rendered pods read (", 1)[1].split(")", 1)[0]
    for name in ("llm-engine-postgres-credentials", "llmops-redis-auth", "llmops-registry-pull", "llmops-site-ca",
                 "model-engine-object-storage-config", "model-engine-aws-config"):
        assert name in held, (name, held)
    msg = out.split("model_engine: the bundle does not carry", 1)[1]
    assert msg.startswith(" 6 of the 6 images model-engine names (at install and at run time); stopping before helm install."), msg
    for image in ("public.ecr.aws/b2z8n5q1/model-engine:" + ME_TAG, "public.ecr.aws/b2z8n5q1/vllm:0.11.0",
                  "docker.io/curlimages/curl:7.72.0"):
        assert image in msg, (image, msg)
    # The node's GPU labels reached the values: the H100 is model-engine's nvidia-hopper-h100.
    values = yaml.safe_load((site["private"] / "model-engine" / "values.yaml").read_text())
    assert "nvidia-hopper-h100" in json.dumps(values["recommendedHardware"]), values["recommendedHardware"]
    assert (site["private"] / "model-engine" / "values.yaml").stat().st_mode & 0o777 == 0o600
    # Nothing installed: no release, no endpoint namespace, no GpuType label on the node yet.
    assert release_absent(kube, ns) and namespace_absent(kube, ns + "-ep")
    assert "k8s.amazonaws.com/accelerator" not in kube.core.read_node("localhost").metadata.labels


def test_the_api_server_refuses_a_cluster_policy_value_with_the_crds_message(kube, site):
    rc, out = site_yml(kube, site, "--tags", "gpu_operator", "-e", json.dumps({"gpu_operator_values": {"mig": {"strategy": "triple"}}}))
    assert rc == 2, out[-6000:]
    assert ("gpu_operator: the cluster's API server refuses the ClusterPolicy these values produce (a server-side dry run "
            "against the chart's CRD; nothing was stored or installed): ClusterPolicy.nvidia.com \"cluster-policy\" is "
            "invalid: spec.mig.strategy: Unsupported value: \"triple\": supported values: \"none\", \"single\", \"mixed\". "
            "Correct gpu_operator_values") in out, out[-6000:]
    assert cluster_policies(kube) == [] and namespace_absent(kube, "gpu-operator")


def test_model_engine_names_a_missing_key_and_a_gpu_without_gpu_type_before_installing(kube, site):
    ns = site["namespace"]
    pg = kube.core.read_namespaced_secret("llm-engine-postgres-credentials", ns)
    url = pg.data["database_url"]
    kube.core.replace_namespaced_secret("llm-engine-postgres-credentials", ns, kube.k8s.V1Secret(
        metadata=kube.k8s.V1ObjectMeta(name="llm-engine-postgres-credentials", labels=pg.metadata.labels),
        type="Opaque", data={"DATABASE_URL": url}))
    try:
        # Scale-to-zero switched on too: KEDA's CRD is not in the lab cluster, and both gaps are named at once.
        rc, out = site_yml(kube, site, "--tags", "model_engine", "-e", json.dumps(dict(
            model_engine_scale_to_zero=True, model_engine_prometheus_address="http://prometheus.monitoring:9090")))
        assert rc == 2, out[-6000:]
        assert ("model_engine: 2 prerequisite(s) missing in the cluster, nothing installed: (1) CRD scaledobjects.keda.sh "
                "for model_engine_scale_to_zero (KEDA ScaledObjects): install it from the bundle first, or turn the feature "
                "off. (2) Secret llm-engine-postgres-credentials in namespace %s has no key database_url, which apps/v1 "
                % ns) in out, out[-6000:]
        assert "(it has: DATABASE_URL): correct the key the earlier stage names, or run cluster_secrets again" in out
        assert "model_engine: the bundle does not carry" not in out
        assert release_absent(kube, ns) and namespace_absent(kube, ns + "-ep")
    finally:
        kube.core.replace_namespaced_secret("llm-engine-postgres-credentials", ns, kube.k8s.V1Secret(
            metadata=kube.k8s.V1ObjectMeta(name="llm-engine-postgres-credentials", labels=pg.metadata.labels),
            type="Opaque", data={"database_url": url}))

    kube.run([kube.CLUSTER / "fake-gpu.sh", "1", "NVIDIA-H200"])
    try:
        rc, out = site_yml(kube, site, "--tags", "model_engine")
        assert rc == 2, out[-6000:]
        assert "node localhost has GPU product NVIDIA-H200" in out and "Map it in model_engine_gpu_types" in out, out[-6000:]
        assert "nothing was installed" in out
    finally:
        kube.run([kube.CLUSTER / "fake-gpu.sh", "1", PRODUCT])
    assert release_absent(kube, ns)


def crd_names(kube):
    return sorted(c.metadata.name for c in kube.k8s.ApiextensionsV1Api().list_custom_resource_definition().items)


def test_uninstall_removes_the_cluster_stages_objects_and_keeps_the_controllers_secrets(kube, site):
    """playbooks/uninstall.yml's cluster stages (issue 18): the CRDs gpu_operator applied (found by their field manager)
    and the stack namespace with its Secrets go; check mode lists them first and changes nothing; the secrets on the
    controller stay; a second run changes nothing. Limited to the controller: the inventory's service host is this
    machine (a local connection), whose packages are not the test's to remove. The check-mode run and the second run
    take the two stages that hold objects here (each kubernetes.core call costs seconds); the run between takes all
    four cluster stages (vllm_serving's own release and Secret: test_serving_role.py)."""
    ns = site["namespace"]
    args = ["--tags", "gpu_operator,cluster_secrets", "--limit", "localhost"]
    every = ["--tags", "vllm_serving,model_engine,gpu_operator,cluster_secrets", "--limit", "localhost"]
    before = crd_names(kube)
    assert set(APPLIED) <= set(before)

    rc, out = site_yml(kube, site, "--check", *args, playbook="uninstall.yml")
    assert rc == 0, out[-6000:]
    report = out.split("uninstall: localhost: would remove ", 1)[1].split('"', 1)[0]
    for name in APPLIED:
        assert "gpu_operator: CustomResourceDefinition %s" % name in report, report
    assert "cluster_secrets: Namespace %s (with its Secrets)" % ns in report, report
    assert "cluster_secrets: record llmops_site.cluster_secrets" in report, report
    assert crd_names(kube) == before and not namespace_absent(kube, ns)

    rc, out = site_yml(kube, site, *every, playbook="uninstall.yml")
    assert rc == 0, out[-6000:]
    assert "uninstall: localhost: removed " in out, out[-3000:]
    assert crd_names(kube) == sorted(set(before) - set(APPLIED))
    assert namespace_absent(kube, ns)
    assert (site["private"] / "redis" / "password").is_file() and (site["private"] / "pki" / "ca.crt").is_file()
    state = json.loads((site["private"] / "site-state.json").read_text())
    assert "cluster_secrets" not in state and {"pki", "redis", "registry", "postgres", "minio"} <= set(state), sorted(state)

    rc, out = site_yml(kube, site, *args, playbook="uninstall.yml")
    assert rc == 0, out[-6000:]
    assert re.search(r"localhost\s*:\s*ok=\d+\s+changed=0\s", out), out[-3000:]
    assert "uninstall: localhost: removed 0: nothing." in out, out[-3000:]
