"""The cluster runs pods from local images, and service account tokens work."""
import json
import subprocess


def test_pod_runs_to_completion_and_logs(kube):
    ns = kube.create_namespace()
    log = kube.run_pod(ns, "hello", ["sh", "-c", "echo hello-from-llmops-smoke; echo ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)"])
    assert "hello-from-llmops-smoke" in log
    assert "ns=%s" % ns in log  # the service account volume is mounted
    pod = kube.core.read_namespaced_pod("hello", ns)
    assert pod.spec.node_name == "localhost"
    assert pod.status.container_statuses[0].image.endswith("localhost/busybox:1")
    kube.delete_namespace(ns)
    assert ns not in [n.metadata.name for n in kube.core.list_namespace().items]


def test_pod_reaches_api_with_its_service_account_token(kube, namespace):
    k8s = kube.k8s
    kube.core.create_namespaced_config_map(namespace, k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(name="probe"), data={"answer": "token-works-42"}))
    rbac = k8s.RbacAuthorizationV1Api()
    rbac.create_namespaced_role(namespace, k8s.V1Role(
        metadata=k8s.V1ObjectMeta(name="read-cm"),
        rules=[k8s.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get"])]))
    rbac.create_namespaced_role_binding(namespace, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "read-cm"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-cm"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]})
    # No DNS in the test cluster: the "kubernetes" Service by its ClusterIP (from the env).
    script = ('T=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token); '
              'wget -q -O- --no-check-certificate --header "Authorization: Bearer $T" '
              'https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/%s/configmaps/probe'
              % namespace)
    log = kube.run_pod(namespace, "api-client", ["sh", "-c", script])
    assert json.loads(log)["data"] == {"answer": "token-works-42"}, log


def test_up_again_is_a_no_op(kube):
    p = subprocess.run([str(kube.CLUSTER / "up.sh")], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "already running" in p.stdout
    assert p.stdout.strip().splitlines()[-1] == "KUBECONFIG=%s" % kube.kubeconfig
