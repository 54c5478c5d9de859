"""kubernetes.core.helm (ansible-playbook, Helm v4) installs, upgrades and uninstalls the
smoke chart on the 1.20 cluster, idempotently."""
import json
import os
import urllib.request
from pathlib import Path

import pytest
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

PLAYBOOK = Path(__file__).parent / "playbooks" / "helm_smoke.yml"


def play(kube, namespace, state, message="hello"):
    """Run the playbook; return (changed count, the helm task's result)."""
    ansible_playbook = Path(kube.PYTHON).parent / "ansible-playbook"
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               KUBECONFIG=kube.kubeconfig)
    p = kube.run([ansible_playbook, "-i", "localhost,", PLAYBOOK,
                  "-e", "ansible_python_interpreter=%s" % kube.PYTHON,
                  "-e", json.dumps({"chart_path": str(kube.CLUSTER / "charts" / "smoke"),
                                    "release_namespace": namespace, "helm_state": state,
                                    "smoke_message": message, "helm_binary": kube.HELM})],
                 check=False, env=env)
    assert p.returncode == 0, "ansible-playbook failed:\n%s\n%s" % (p.stdout[-6000:], p.stderr[-3000:])
    out = json.loads(p.stdout[p.stdout.index("{"):])
    stats = out["stats"]["localhost"]
    assert stats["failures"] == 0 and stats["unreachable"] == 0, stats
    helm_task = [t for t in out["plays"][0]["tasks"] if t["task"]["name"].startswith("Make the smoke release")][0]
    return stats["changed"], helm_task["hosts"]["localhost"]


def served_message(kube, namespace):
    svc = kube.core.read_namespaced_service("smoke", namespace)
    with urllib.request.urlopen("http://%s/" % svc.spec.cluster_ip, timeout=5) as r:  # noqa: S310
        return r.read().decode().strip()


def test_helm_install_upgrade_uninstall_idempotent(kube):
    ns = "helm-smoke"
    kube.delete_namespace(ns)  # a leftover from an interrupted run
    try:
        changed, res = play(kube, ns, "present", "first message")
        assert changed == 1 and res["changed"] is True, res
        assert res["status"]["status"] == "deployed", res["status"]
        changed, res = play(kube, ns, "present", "first message")
        assert changed == 0 and res["changed"] is False, res
        assert kube.core.read_namespaced_config_map("smoke", ns).data["index.html"] == "first message"
        assert kube.wait_for("the Service to serve the first message",
                             lambda: served_message(kube, ns) == "first message", timeout=60)
        # 1.20 does not serve policy/v1: the chart picked policy/v1beta1 from the cluster's discovery.
        dyn = DynamicClient(kube.k8s.ApiClient())
        with pytest.raises(ResourceNotFoundError):
            dyn.resources.get(api_version="policy/v1", kind="PodDisruptionBudget")
        pdb = dyn.resources.get(api_version="policy/v1beta1", kind="PodDisruptionBudget").get(name="smoke", namespace=ns)
        assert pdb.spec.minAvailable == 1

        changed, res = play(kube, ns, "present", "second message")
        assert changed == 1 and res["changed"] is True, res
        assert int(res["status"]["revision"]) == 2, res["status"]
        assert kube.core.read_namespaced_config_map("smoke", ns).data["index.html"] == "second message"
        assert kube.wait_for("the Service to serve the second message",
                             lambda: served_message(kube, ns) == "second message", timeout=90)
        changed, res = play(kube, ns, "present", "second message")
        assert changed == 0 and res["changed"] is False, res

        changed, res = play(kube, ns, "absent")
        assert changed == 1 and res["changed"] is True, res
        assert "smoke" not in [s.metadata.name for s in kube.core.list_namespaced_service(ns).items]
        changed, res = play(kube, ns, "absent")
        assert changed == 0 and res["changed"] is False, res
    finally:
        kube.delete_namespace(ns)
