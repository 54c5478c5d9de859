"""Fixtures for the tests that run against the single-node test cluster (tests/cluster/).

Start the cluster first and point KUBECONFIG at it::

    tests/cluster/up.sh                # last line: KUBECONFIG=.../admin.kubeconfig
    export KUBECONFIG=...              # or run everything with tests/cluster/run-tests.sh
    .venv/bin/pytest tests/integration/cluster

Without KUBECONFIG every test fails (on purpose: these tests are never skipped).
"""
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
CLUSTER = REPO / "tests" / "cluster"
BUSYBOX = "localhost/busybox:1"


def tool(env, default):
    return os.environ.get(env) or str(default)


HELM = tool("HELM", REPO / ".tools" / "bin" / "helm")
KUBECTL = tool("KUBECTL", REPO / ".tools" / "bin" / "kubectl")
PYTHON = tool("PYTHON", REPO / ".venv" / "bin" / "python")


def wait_for(what, predicate, timeout=120, interval=0.5):
    """Poll predicate() until it returns something truthy; fail naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as e:  # noqa: BLE001 - keep polling on transient API errors
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))


@pytest.fixture(scope="session")
def kubeconfig():
    path = os.environ.get("KUBECONFIG")
    if not path:
        pytest.fail("KUBECONFIG is not set: start the test cluster with tests/cluster/up.sh and "
                    "export the KUBECONFIG=... line it prints (or use tests/cluster/run-tests.sh)")
    if not os.path.isfile(path):
        pytest.fail("KUBECONFIG=%s does not exist: is the test cluster up (tests/cluster/up.sh)?" % path)
    return path


@pytest.fixture(scope="session")
def cluster_dir(kubeconfig):
    """The harness work dir (admin.kubeconfig lives in it)."""
    return Path(kubeconfig).resolve().parent


@pytest.fixture(scope="session")
def k8s(kubeconfig):
    """The kubernetes client module, configured for the test cluster."""
    import kubernetes

    kubernetes.config.load_kube_config(config_file=kubeconfig)
    return kubernetes.client


@pytest.fixture(scope="session")
def core(k8s):
    return k8s.CoreV1Api()


@pytest.fixture(scope="session")
def apps(k8s):
    return k8s.AppsV1Api()


@pytest.fixture(scope="session", autouse=True)
def node_ready(kubeconfig, core):
    node = core.read_node("localhost")
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    if not ready or ready[0].status != "True":
        pytest.fail("the test cluster's node is not Ready: %s" % ready)
    return node


class Kube:
    """Helpers for tests, handed out by the `kube` fixture (tests import nothing from here)."""

    BUSYBOX = BUSYBOX
    HELM, KUBECTL, PYTHON, REPO, CLUSTER = HELM, KUBECTL, PYTHON, REPO, CLUSTER

    def __init__(self, k8s, core, apps, kubeconfig, cluster_dir):
        self.k8s, self.core, self.apps = k8s, core, apps
        self.kubeconfig, self.cluster_dir = kubeconfig, cluster_dir

    wait_for = staticmethod(wait_for)

    @staticmethod
    def run(cmd, check=True, **kw):
        """subprocess.run with text output; on failure the output is in the assertion message."""
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False, **kw)
        if check:
            assert p.returncode == 0, "%s failed (rc %d):\n%s\n%s" % (cmd, p.returncode, p.stdout, p.stderr)
        return p

    def busybox_pod(self, name, command, resources=None, **spec):
        """A one-shot pod running `command` in the local busybox image. busybox as PID 1 ignores SIGTERM: a pod
        still running when its namespace goes would hold the deletion for the default 30 s, so 1 s unless given."""
        k8s = self.k8s
        spec.setdefault("termination_grace_period_seconds", 1)
        container = k8s.V1Container(name="main", image=BUSYBOX, image_pull_policy="Never",
                                    command=command, resources=resources)
        return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=name),
                         spec=k8s.V1PodSpec(containers=[container], restart_policy="Never", **spec))

    def wait_pod_done(self, namespace, name, timeout=120):
        def done():
            p = self.core.read_namespaced_pod(name, namespace)
            return p if p.status.phase in ("Succeeded", "Failed") else None
        return wait_for("pod %s/%s to finish" % (namespace, name), done, timeout=timeout)

    def pod_log(self, namespace, name):
        """The pod's log as text (raw: some client versions parse a JSON log into a dict)."""
        r = self.core.read_namespaced_pod_log(name, namespace, _preload_content=False)
        return r.data.decode()

    def run_pod(self, namespace, name, command, timeout=120, **spec):
        """Run a busybox pod to completion and return its log; fail if it does not succeed."""
        self.core.create_namespaced_pod(namespace, self.busybox_pod(name, command, **spec))
        pod = self.wait_pod_done(namespace, name, timeout)
        log = self.pod_log(namespace, name)
        assert pod.status.phase == "Succeeded", "pod %s failed: %s\n%s" % (name, pod.status, log)
        return log

    def delete_namespace(self, name, timeout=180):
        from kubernetes.client.rest import ApiException

        try:
            self.core.delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise

        def gone():
            try:
                self.core.read_namespace(name)
            except ApiException as e:
                return e.status == 404
            return False

        wait_for("namespace %s to be deleted" % name, gone, timeout=timeout)

    def create_namespace(self):
        name = "t-" + uuid.uuid4().hex[:8]
        self.core.create_namespace(self.k8s.V1Namespace(metadata=self.k8s.V1ObjectMeta(name=name)))
        # Kubernetes 1.20 puts the token in a Secret: pods are refused until it exists.
        wait_for("the default service account's token in %s" % name,
                 lambda: self.core.read_namespaced_service_account("default", name).secrets, timeout=60)
        return name


@pytest.fixture(scope="session")
def kube(k8s, core, apps, kubeconfig, cluster_dir):
    return Kube(k8s, core, apps, kubeconfig, cluster_dir)


@pytest.fixture
def namespace(kube):
    """A fresh namespace, deleted (and waited for) afterwards."""
    name = kube.create_namespace()
    yield name
    kube.delete_namespace(name)
