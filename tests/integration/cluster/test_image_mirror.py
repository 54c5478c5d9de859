"""llmops.onprem.image_mirror in the test cluster. The harness's containerd runs on this host with
config_path = <cluster dir>/containerd/certs.d, so a registry the test starts on 127.0.0.1 serves its
pulls. An image pushed by oci_mirror under its site_image name runs in a pod that names the UPSTREAM
reference; the per-node pull check passes; with the mirror removed, or the image missing, or a wrong
password, the check fails naming the node, the image, the event reason and the fix."""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

MIRROR_TESTS = Path(__file__).resolve().parents[1] / "mirror"
sys.path.insert(0, str(MIRROR_TESTS))

import mirror_layouts as L  # noqa: E402
from registry_server import PULL_USER, start_registry  # noqa: E402

PLAYBOOK = Path(__file__).parent / "playbooks" / "image_mirror.yml"
# Loopback "upstream" for the mirror-removed case: without a mirror the node goes there and is refused,
# so no test traffic leaves the machine.
LOOPBACK_UPSTREAM = "localhost:1"


@pytest.fixture(scope="module")
def site(tmp_path_factory, kube):
    d = tmp_path_factory.mktemp("image-mirror")
    reg = start_registry(d / "registry")
    tag = uuid.uuid4().hex[:10]
    images = {"hub": "docker.io/llmops-test/busybox:%s" % tag, "loop": "%s/llmops-test/busybox:%s" % (LOOPBACK_UPSTREAM, tag)}
    layout = str(d / "layout")
    busybox = L.busybox_layer(layout)
    for ref in images.values():
        L.image(layout, ref, [busybox], cmd=["sh"])
    args = {"ANSIBLE_MODULE_ARGS": reg.module_args(layout, state_dir=str(d / "state"))}
    (d / "args.json").write_text(json.dumps(args))
    p = subprocess.run([kube.PYTHON, str(kube.REPO / "plugins" / "modules" / "oci_mirror.py"), str(d / "args.json")],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(kube.REPO / ".cache" / "collections")),
                       check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    hosts_dir = kube.cluster_dir / "containerd" / "certs.d"
    ns = kube.create_namespace()
    written = [hosts_dir / name for name in ("docker.io", LOOPBACK_UPSTREAM, reg.host)]
    for w in written:
        assert not w.exists(), "%s exists already: another test is using the harness's registry config" % w
    yield dict(reg=reg, images=images, hosts_dir=hosts_dir, ns=ns, dir=d, tag=tag)
    for w in written:
        shutil.rmtree(w, ignore_errors=True)
    kube.delete_namespace(ns)
    # The pulls left tag and digest references in the node's image store: remove every one of ours.
    ctr = ["ctr", "--address", kube.cluster_dir / "containerd" / "containerd.sock", "-n", "k8s.io", "images"]
    ours = [ref for ref in kube.run(ctr + ["ls", "-q"]).stdout.split()
            if ref.startswith(("docker.io/llmops-test/", LOOPBACK_UPSTREAM + "/llmops-test/"))]
    if ours:
        kube.run(ctr + ["rm"] + ours, check=False)
    reg.stop()


def play(kube, site, expect_rc=0, playbook=PLAYBOOK, inventory="localhost,", **extra):
    variables = dict(
        image_mirror_registry=site["reg"].host, image_mirror_ca_file=site["reg"].ca,
        image_mirror_pull_user=PULL_USER, image_mirror_pull_password=site["reg"].passwords[PULL_USER],
        image_mirror_upstreams=["docker.io", LOOPBACK_UPSTREAM],
        image_mirror_containerd_hosts_dir=str(site["hosts_dir"]), image_mirror_containerd_manage_config=False,
        image_mirror_check_kubeconfig=kube.kubeconfig, image_mirror_check_namespace=site["ns"],
        image_mirror_check_image=site["images"]["hub"], image_mirror_check_command=["true"], image_mirror_check_timeout=90)
    variables.update(extra)
    vars_file = site["dir"] / ("vars-%s.json" % uuid.uuid4().hex[:6])
    vars_file.write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_COLLECTIONS_PATH=str(kube.REPO / ".cache" / "collections"),
               ANSIBLE_CONFIG=str(kube.REPO / "ansible.cfg"))
    p = kube.run([Path(kube.PYTHON).parent / "ansible-playbook", "-i", inventory, "-c", "local",
                  "-e", "ansible_python_interpreter=%s" % kube.PYTHON, "-e", "@%s" % vars_file, playbook],
                 check=False, env=env, cwd=str(kube.REPO))
    out = p.stdout + p.stderr
    assert p.returncode == expect_rc, out[-8000:]
    assert site["reg"].passwords[PULL_USER] not in out, "the pull password appears in the output"
    login = "%s:%s" % (PULL_USER, variables["image_mirror_pull_password"])
    assert base64.b64encode(login.encode()).decode() not in out, "the pull login appears (base64) in the output"
    return out


def test_pod_naming_the_upstream_registry_runs_through_the_mirror(kube, site):
    out = play(kube, site)
    found = re.search(r"PULL_REPORT=(\[.*\])", out)
    assert found, out[-6000:]
    report = json.loads(found.group(1).replace('\\"', '"'))
    assert report == [{"node": "localhost", "image": site["images"]["hub"], "ok": True, "reason": "Pulled",
                       "diagnosis": "ok", "message": "", "fix": ""}]
    hosts_toml = (site["hosts_dir"] / "docker.io" / "hosts.toml").read_text()
    assert '[host."https://%s/v2/docker.io"]' % site["reg"].host in hosts_toml
    assert "override_path = true" in hosts_toml
    assert oct((site["hosts_dir"] / "docker.io" / "hosts.toml").stat().st_mode & 0o777) == "0o600"
    # A plain pod (no imagePullSecret) naming the upstream reference runs, served by the site registry.
    pod = kube.k8s.V1Pod(
        metadata=kube.k8s.V1ObjectMeta(name="upstream-named"),
        spec=kube.k8s.V1PodSpec(restart_policy="Never", containers=[kube.k8s.V1Container(
            name="main", image=site["images"]["hub"], image_pull_policy="Always",
            command=["sh", "-c", "echo served-by-mirror"])]))
    kube.core.create_namespaced_pod(site["ns"], pod)
    done = kube.wait_pod_done(site["ns"], "upstream-named", timeout=120)
    assert done.status.phase == "Succeeded", done.status
    assert kube.pod_log(site["ns"], "upstream-named").strip() == "served-by-mirror"
    # The egress audit's two declared exceptions are said, with their reasons.
    assert "image_mirror: egress audit exception (pull-always)" in out and "declared: the check must make each node" in out
    assert "image_mirror: egress audit exception (outside-registry)" in out and "on purpose" in out
    # Second run of the node configuration changes nothing.
    out = play(kube, site, image_mirror_test_check=False)
    assert re.search(r"localhost\s*:\s*ok=\d+\s+changed=0\s", out), out[-3000:]


def test_pull_check_names_a_missing_mirror(kube, site):
    play(kube, site, image_mirror_test_check=False)
    shutil.rmtree(site["hosts_dir"] / LOOPBACK_UPSTREAM)
    out = play(kube, site, expect_rc=2, image_mirror_test_configure=False, image_mirror_check_image=site["images"]["loop"])
    expected = (r"pull check failed on 1 of 1 node\(s\)\. +node localhost: image %s: (ErrImagePull|ImagePullBackOff) "
                r"\(upstream\): " % re.escape(site["images"]["loop"]))
    assert re.search(expected, out), out[-4000:]
    assert "localhost:1" in out and "connection refused" in out
    assert "Likely fix: the node went to the upstream registry instead of the mirror: localhost has no mirror" in out


def test_verify_turns_a_missing_mirror_into_its_red_line_with_the_fix(kube, site):
    """playbooks/verify.yml's pull line (issue 17 item 3, "a node's mirror config removed"): the verify role runs
    the pull check and reports the node that went upstream as one red line with the fix, in report.json and
    report.html under the inventory, and exits non-zero after writing them."""
    play(kube, site, image_mirror_test_check=False)
    shutil.rmtree(site["hosts_dir"] / LOOPBACK_UPSTREAM)
    inventory = site["dir"] / ("verify-%s" % uuid.uuid4().hex[:6])
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": kube.PYTHON}}}}))
    out = play(kube, site, expect_rc=2, playbook=PLAYBOOK.parent / "verify_pull.yml", inventory=inventory / "hosts.yml",
               image_mirror_check_image=site["images"]["loop"])
    report = json.loads((inventory / ".private" / "verify" / "report.json").read_text())
    lines = [line for stage in report["stages"] for line in stage["lines"] if line["stage"] == "image_mirror"]
    assert [(ln["check"], ln["status"]) for ln in lines] == [("image pull on localhost", "fail")], lines
    assert site["images"]["loop"] in lines[0]["detail"] and "(upstream)" in lines[0]["detail"], lines
    assert lines[0]["fix"].startswith("the node went to the upstream registry instead of the mirror: localhost has no mirror"), lines
    assert "image pull on localhost" in (inventory / ".private" / "verify" / "report.html").read_text()
    assert "FAIL image_mirror / image pull on localhost" in out


def test_pull_check_names_an_image_missing_from_the_registry(kube, site):
    play(kube, site, image_mirror_test_check=False)
    missing = "docker.io/llmops-test/not-mirrored:%s" % site["tag"]
    out = play(kube, site, expect_rc=2, image_mirror_test_configure=False, image_mirror_check_image=missing)
    assert re.search(r"node localhost: image %s: (ErrImagePull|ImagePullBackOff) \(not found\): " % re.escape(missing), out), out[-4000:]
    assert "Likely fix: the image is not in the site registry: add %s to the bundle" % missing in out


def test_pull_check_names_refused_credentials(kube, site):
    play(kube, site, image_mirror_test_check=False, image_mirror_pull_password="wrong-password-123")
    try:
        out = play(kube, site, expect_rc=2, image_mirror_test_configure=False)
        assert re.search(r"node localhost: image %s: (ErrImagePull|ImagePullBackOff) \(unauthorized\): "
                         % re.escape(site["images"]["hub"]), out), out[-4000:]
        assert "Likely fix: the site registry refused the node's credentials" in out
    finally:
        play(kube, site, image_mirror_test_check=False)


def test_pull_check_egress_audit_refuses_before_any_pod(kube, site):
    """An unpinned check image, and one the bundle does not carry: refused by the egress audit, no pod started."""
    play(kube, site, image_mirror_test_check=False)
    latest = "docker.io/llmops-test/hub:latest"
    out = " ".join(play(kube, site, expect_rc=2, image_mirror_test_configure=False, image_mirror_check_image=latest).split())
    assert "the egress audit of the pull check pods found 1 problem(s), no pod was started" in out, out[-4000:]
    assert "spec.containers[pull].image names %s (latest): pin a version tag or a digest" % latest in out
    out = " ".join(play(kube, site, expect_rc=2, image_mirror_test_configure=False,
                        image_mirror_check_bundle_images=["docker.io/llmops-test/other:1"]).split())
    assert "names %s, which the bundle does not carry" % site["images"]["hub"] in out, out[-4000:]
    pods = kube.core.list_namespaced_pod(site["ns"], label_selector="app.kubernetes.io/name=llmops-pull-check").items
    assert pods == []
