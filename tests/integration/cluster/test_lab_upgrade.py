"""Day two in the lab (issue 18, "Tests that must exist", first bullet): the whole upgrade in one run of site.yml on
the test cluster.

Bundle 1 (tests/integration/bundle/lab_bundle.py, with the REAL tiny model of tests/tools/make_model.py as its
checkpoint tiny) is installed by site.yml - bundle import, image push into Debian's docker-registry on loopback,
checkpoint sync into `rclone serve s3` on the pod bridge's gateway, and the vllm_serving stage, whose pod's REAL
model-pull init container pulls that checkpoint and whose REAL vLLM (the CPU build) serves it. Bundle 2 changes one
image, one checkpoint shard (its tensors kept, so vLLM loads it) and one package (lab-free 0.5-2 -> 0.5-3, of a
repository signed as the bundle's package step signs it). An apt host - a Debian 12 container with no network at all,
holding bundle 1's two packages - takes the packages_repo stage. site.yml with bundle 2, while a request loop runs
against the model's Service: only those move (the change report's per-stage lines, the checkpoint's uploaded and
copied bytes, the one package apt upgraded on the host), the pod rolls with no failed request, the old image's
manifest leaves the registry (its own layer leaves the registry's storage with the garbage collection) and the old checkpoint prefix stays while a
terminating pod still names it; once no pod does, playbooks/prune.yml removes it; a third site.yml run reports
changed=0 and leaves the state file as it was.

The big vLLM image is not in the bundle: it stays preloaded in the node's containerd (serving_helpers), as does the
model-pull image; the inventory's egress exception says so. Not here: the registry host's garbage collection play
(molecule/services; here the test runs docker-registry garbage-collect as that play does). The node
cache's prune entry point runs on this host after the roll (the inventory has no k8s_nodes: site.yml would configure
the node's containerd there); test_serving_role.py no longer rolls its own pod, this test's roll covers the role's."""
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

import serving_helpers as sh

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "bundle"))
sys.path.insert(0, str(TESTS / "checkpoints"))
sys.path.insert(0, str(TESTS / "mirror"))
import lab_bundle  # noqa: E402
from ckpt_helpers import BUCKET, RO, RW, S3Server  # noqa: E402
from registry_server import PUSH_USER, start_registry  # noqa: E402

GATEWAY = "10.244.0.1"   # tests/cluster/lib.sh K8S_POD_GW: pods reach this host here
PULL_IMAGE = "localhost/llmops/model-pull:test"
NODE_PRUNE = Path(__file__).parent / "playbooks" / "serving_role_prune.yml"
TAGS = "bundle_import,packages_repo,image_mirror,checkpoints,vllm_serving,prune,summary"
APT_HOST = "lab-apt-1"  # the inventory name of the apt host (a container; its podman name is per run)
HOLD = "llmops.onprem/test-hold"
MODELS = [dict(name="tiny", served_name="tiny-chat", gpus=0, preset="chat_small", checkpoint=dict(name="tiny"),
               args={"enforce-eager": True, "dtype": "float32"})]


def human(n):
    """ansible's human_readable for the sizes here."""
    return "%.2f Bytes" % n if n < 1024 else "%.2f KB" % (n / 1024.0)


def changes(out):
    """The summary's "What changed in this run, per stage" lines of a run's output (the YAML result format of
    ansible.cfg): {stage: change}."""
    lines = out.splitlines()
    [i] = [n for n, ln in enumerate(lines) if ln.lstrip().startswith("- ") and "What changed in this run, per stage:" in ln]
    indent = len(lines[i]) - len(lines[i].lstrip())
    block = [lines[i]]
    for ln in lines[i + 1:]:
        depth = len(ln) - len(ln.lstrip())
        if not ln.strip() or depth < indent or (depth == indent and not ln.lstrip().startswith("- ")):
            break
        block.append(ln)
    items = yaml.safe_load("\n".join(ln[indent:] for ln in block))
    return dict((k, v.strip()) for k, v in (ln.split(":", 1) for ln in items[1:]))


def blob_on_disk(reg, digest):
    hexd = digest.split(":", 1)[1]
    return (reg.dir / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data").is_file()


def pods_naming(kube, digest):
    """Every pod of the cluster whose spec names digest (what the checkpoints prune looks at)."""
    return ["%s/%s" % (p.metadata.namespace, p.metadata.name) for p in kube.core.list_pod_for_all_namespaces().items
            if digest in json.dumps(kube.k8s.ApiClient().sanitize_for_serialization(p.spec))]


@pytest.fixture(scope="module")
def images(kube, tmp_path_factory):
    """The session's serving images (the real vLLM image among them) and the real model-pull image."""
    sh.build_and_load_images(kube)
    out = tmp_path_factory.mktemp("pull-img") / "model-pull.tar"
    kube.run([kube.REPO / "serving" / "images" / "build.sh", "model-pull", "--output", out, "--tag", PULL_IMAGE])
    kube.run([kube.CLUSTER / "load-image.sh", out])


@pytest.fixture(scope="module")
def apt_host(kube, bundles):
    """A Debian 12 host for the packages_repo stage: the molecule hosts' image (tests/images/debian12-systemd), no
    network (the repository reaches it from the controller through the container connection, as the stage copies it
    to any host), holding bundle 1's packages as a host that an earlier install left them on (dpkg -i). Yields
    (container name, podman environment)."""
    env = dict(os.environ)
    podman_env = kube.run(["bash", kube.REPO / "tests" / "tools" / "podman-env.sh"]).stdout
    env.update(re.findall(r"^export (\w+)=(\S+)$", podman_env, re.M))
    image = kube.run([kube.REPO / "tests" / "images" / "debian12-systemd" / "build.sh"], env=env).stdout.strip().splitlines()[-1]
    name = "llmops-lab-apt-%d" % os.getpid()
    podman = ["podman"]
    subprocess.run(podman + ["rm", "-f", name], env=env, capture_output=True, check=False)
    kube.run(podman + ["run", "-d", "--name", name, "--network", "none", "--entrypoint", "sleep", image, "infinity"], env=env)
    try:
        pool = bundles["lab"]["root"] / "packages" / "debian-12" / "pool"
        debs = sorted(pool.glob("*.deb"))
        for deb in debs:
            kube.run(podman + ["cp", deb, "%s:/tmp/%s" % (name, deb.name)], env=env)
        kube.run(podman + ["exec", name, "dpkg", "-i"] + ["/tmp/" + d.name for d in debs], env=env)
        yield name, env
    finally:
        subprocess.run(podman + ["rm", "-f", "-t", "0", name], env=env, capture_output=True, check=False)


def installed(apt_host, package):
    name, env = apt_host
    p = subprocess.run(["podman", "exec", name, "dpkg-query", "-W", "-f", "${Version}", package], env=env,
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def bundles(kube, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lab-upgrade")
    venv = kube.run([kube.REPO / "serving" / "images" / "build.sh", "vllm-env"]).stdout.strip().splitlines()[-1]
    kube.run([Path(venv) / "bin" / "python", kube.REPO / "tests" / "tools" / "make_model.py", tmp / "model"])
    lab = lab_bundle.build(tmp, segment_size="1MiB", model_dir=tmp / "model", signed_repo=True)
    root2, media2 = lab_bundle.build_v2(lab, tmp, segment_size="1MiB")
    return dict(lab=lab, root2=root2, media2=media2, tmp=tmp)


def site(d, kube, lab, reg, s3, ns, cache, apt_host):
    """A site inventory: the controller (localhost) with the cluster, a registry and a minio host whose stages have
    run (their records point at the loopback registry and the object store on the gateway), cluster_secrets done, and
    the apt host (in the group packages_repo, reached with podman's connection)."""
    inv = d / "site"
    private = inv / ".private"
    (inv / "group_vars" / "all").mkdir(parents=True)
    private.mkdir(mode=0o700)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": str(kube.PYTHON)}},
        "children": {"registry": {"hosts": {"registry-1": {"ansible_host": "192.0.2.10"}}},
                     "minio": {"hosts": {"minio-1": {"ansible_host": "192.0.2.11"}}},
                     "packages_repo": {"hosts": {APT_HOST: {
                         "ansible_connection": "containers.podman.podman", "ansible_host": apt_host[0],
                         "ansible_python_interpreter": "/usr/bin/python3"}}}}}}))
    (inv / "group_vars" / "all" / "site.yml").write_text(yaml.safe_dump(dict(
        bundle_import_public_key=str(lab["pub"]),
        llmops_kubeconfig=str(kube.kubeconfig),
        vllm_serving_namespace=ns,
        vllm_serving_helm_binary=str(kube.HELM),
        # The engine and downloader images are preloaded in the node's containerd (pull policy Never), not pulled
        # from the site registry, and the lab bundle does not carry them: the audit's declared exception says so.
        vllm_serving_site_registry="",
        vllm_serving_engine_image=sh.ENGINE_IMAGE,
        vllm_serving_downloader_image=PULL_IMAGE,
        vllm_serving_pull_policy="Never",
        vllm_serving_egress_exceptions=[dict(rule="not-in-bundle", reason="lab: the vLLM CPU image and model-pull are "
                                             "preloaded in the test node's containerd, not carried by the lab bundle")],
        vllm_serving_cache_host_path=str(cache.path),
        vllm_serving_startup_base_seconds=sh.START_SECONDS,
        vllm_serving_drain_seconds=5,
        vllm_serving_wait_timeout=sh.START_SECONDS,
        vllm_serving_models=MODELS,
        vllm_serving_values=dict(engine=dict(resources=sh.ENGINE_RESOURCES, extraEnv=sh.ENGINE_ENV), devices=dict(cpu=dict(kvCacheMemoryBytes="64M")),
                                 readiness=dict(periodSeconds=1, failureThreshold=1)))))
    lab_bundle.seed_site_state(private, reg, s3, PUSH_USER, RW, BUCKET, cluster_secrets={
        "kubeconfig": str(kube.kubeconfig), "namespace": ns, "nodes": ["localhost"], "gpus": 0,
        "secrets": ["llmops-serving-object-storage"]})
    # What cluster_secrets put there: the object store's read-only key pair for the downloader.
    kube.core.create_namespaced_secret(ns, kube.k8s.V1Secret(
        metadata=kube.k8s.V1ObjectMeta(name="llmops-serving-object-storage"),
        string_data={"access-key": RO[0], "secret-key": RO[1]}))
    return inv


def run(kube, inv, playbook, *args, env=None):
    # profile_tasks: each run's slowest tasks go to the test's output (this test's share of the cluster layer's time).
    env = dict(env or os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(kube.REPO / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(kube.REPO / ".cache" / "collections"), KUBECONFIG=str(kube.kubeconfig),
               ANSIBLE_CALLBACKS_ENABLED="llmops.onprem.progress,ansible.posix.profile_tasks",
               PROFILE_TASKS_TASK_OUTPUT_LIMIT="6")
    t = time.monotonic()
    p = subprocess.run([str(Path(kube.PYTHON).parent / "ansible-playbook"), "-i", str(inv), "--limit", "localhost," + APT_HOST,
                        *args, str(kube.REPO / "playbooks" / playbook)], capture_output=True, text=True, env=env,
                       cwd=str(kube.REPO), check=False)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-8000:]
    print("%s %s: %.0f s; slowest tasks:" % (playbook, " ".join(args), time.monotonic() - t))
    table = out[out.rindex("=" * 40):] if "=" * 40 in out else ""
    print("\n".join("  " + ln for ln in table.splitlines() if re.search(r" -+ \d+\.\d+s$", ln)))
    return out, int(re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", out).group(1))


def host_changed(out, host=APT_HOST):
    """The play recap's changed count of one host (0 when the run did not reach it)."""
    m = re.search(r"^%s\s*:\s*ok=\d+\s+changed=(\d+)" % re.escape(host), out, re.M)
    return int(m.group(1)) if m else 0


def node_prune(kube, cache, synced, *args):
    """The vllm_serving role's prune entry point on this host's node cache (the prune stage runs it on each host of
    k8s_nodes; this inventory has none, so that site.yml leaves the node's containerd alone): (process, JSON result,
    what it said)."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               KUBECONFIG=str(kube.kubeconfig))
    p = kube.run([Path(kube.PYTHON).parent / "ansible-playbook", "-i", "localhost,", NODE_PRUNE, *args,
                  "-e", "ansible_python_interpreter=%s" % kube.PYTHON,
                  "-e", json.dumps(dict(serving_cache=str(cache), serving_models=MODELS, checkpoints_synced=synced))],
                 check=False, env=env)
    out = json.loads(p.stdout[p.stdout.index("{"):])
    said = [t for t in out["plays"][0]["tasks"] if t["task"]["name"].endswith("Say what was removed and what stays")]
    return p, out, said[0]["hosts"]["localhost"]["msg"] if said else None


def record(inv):
    return json.loads((inv / ".private" / "site-state.json").read_text())


def test_upgrade_in_the_lab(kube, namespace, images, bundles, apt_host):
    t0 = time.monotonic()
    lab, ns, k8s = bundles["lab"], namespace, kube.k8s
    d = Path(tempfile.mkdtemp(prefix="lab-upgrade-"))
    cache = sh.CacheDir()
    reg = start_registry(d / "registry")
    s3 = S3Server(str(d / "s3"), host=GATEWAY)
    try:
        inv = site(d, kube, lab, reg, s3, ns, cache, apt_host)
        podman_env = apt_host[1]
        bundle1 = ["-e", "llmops_bundle=%s" % lab["media"]]
        bundle2 = ["-e", "llmops_bundle=%s" % bundles["media2"]]

        # Bundle 1: imported, pushed, synced, served by the real engine from the real downloader's pull.
        out, changed = run(kube, inv, "site.yml", "--tags", TAGS, *bundle1, env=podman_env)
        assert changed > 0 and host_changed(out) > 0
        one = record(inv)
        # The apt host: the bundle's repository is its only source; it holds bundle 1's versions, as recorded.
        assert installed(apt_host, "lab-free") == "0.5-2" and installed(apt_host, "lab-tool") == "1:2.0-1"
        assert one["packages_repo"] == {"repositories": {"debian-12": {"lab-free": "0.5-2", "lab-tool": "1:2.0-1"}},
                                        "hosts": {APT_HOST: "debian-12"}}
        assert "packages_repo: %s: upgraded" % APT_HOST not in out
        [old_ckpt] = one["checkpoints"]["synced"]
        files = sorted(f.name for f in (lab["root"] / "models" / "tiny").iterdir())
        assert len(s3.objects(old_ckpt["prefix"])) == len(files) + 1  # and the manifest
        [old] = sh.live_pods(kube, ns, "llmops.onprem/model=tiny")
        assert old.spec.containers[0].args[:2] == ["--model", "/models/tiny/" + old_ckpt["digest"]]
        assert old.spec.init_containers[-1].image == PULL_IMAGE
        changed_ref = lab_bundle.IMAGES[1]
        old_image = [r for r in one["image_mirror"]["pushed"] if changed_ref.split("/", 1)[1].split(":")[0] in r][0]
        old_repo, old_digest = old_image.split("/", 1)[1].split(":")[0], old_image.split("@")[1]
        old_manifest = json.loads((lab["root"] / "images" / "blobs" / "sha256" / old_digest.split(":")[1]).read_text())
        old_layer, shared_layer = old_manifest["layers"][1]["digest"], old_manifest["layers"][0]["digest"]
        key = (inv / ".private" / "serving" / "api-key").read_text().strip()
        t1 = time.monotonic()

        # A pod that names the old checkpoint and is terminating (a finalizer holds it) through the upgrade: the old
        # prefix must outlive it. The roll's own old pod drains for a few seconds only; this one makes it certain.
        holder = kube.busybox_pod("holds-old-checkpoint", ["sleep", "3600"])
        holder.metadata.finalizers = [HOLD]
        holder.spec.containers[0].env = [k8s.V1EnvVar(name="CHECKPOINT", value=old_ckpt["digest"])]
        kube.core.create_namespaced_pod(ns, holder)
        kube.core.delete_namespaced_pod("holds-old-checkpoint", ns)
        kube.wait_for("the holder pod to be terminating",
                      lambda: kube.core.read_namespaced_pod("holds-old-checkpoint", ns).metadata.deletion_timestamp,
                      timeout=30)

        # Bundle 2 under a request loop: only what changed moves; the pod rolls with no failed request.
        url = sh.cluster_ip(kube, ns, "llmops-serving-tiny") + "/v1/completions"
        with sh.RequestLoop(url, "tiny-chat", key=key) as loop:
            kube.wait_for("a first answer through the Service", lambda: loop.codes, timeout=60)
            out, changed = run(kube, inv, "site.yml", "--tags", TAGS, *bundle2, env=podman_env)
            assert changed > 0
            two = record(inv)
            [new_ckpt] = two["checkpoints"]["synced"]

            def rolled():
                pods = kube.core.list_namespaced_pod(ns, label_selector="llmops.onprem/model=tiny").items
                return len(pods) == 1 and pods[0].metadata.annotations["llmops.onprem/checkpoint-digest"] == new_ckpt["digest"] \
                    and all(c.ready for c in pods[0].status.container_statuses or [])
            kube.wait_for("the roll to the new checkpoint", rolled, timeout=sh.START_SECONDS)
            [new] = sh.live_pods(kube, ns, "llmops.onprem/model=tiny")
            served_before = sh.engine_requests(new)
            loop.answered_after_roll(kube)
        t2 = time.monotonic()
        assert not loop.alive(), "the request loop did not stop within 60 s"
        assert len(loop.codes) > 20 and loop.failures == [], (len(loop.codes), len(loop.failures), loop.failures[:5])
        assert new.metadata.name != old.metadata.name
        assert sh.engine_requests(new) - served_before >= 20
        assert new.spec.containers[0].args[:2] == ["--model", "/models/tiny/" + new_ckpt["digest"]]
        # The engine serves bundle 2's shard, which the real downloader pulled into the node cache.
        shard = bundles["root2"] / "models" / "tiny" / "model.safetensors"
        pulled = cache.path / "tiny" / new_ckpt["digest"] / "model.safetensors"
        assert hashlib.sha256(pulled.read_bytes()).hexdigest() == hashlib.sha256(shard.read_bytes()).hexdigest()

        # Per stage, only the changed things: the change report names the one image, the one checkpoint, the pods'
        # digest, and nothing else; the one shard that changed crossed the network, the other files were copied in
        # the store.
        said = changes(out)
        print("what changed, per stage:\n  " + "\n  ".join("%s: %s" % kv for kv in said.items()))
        assert set(said) == {"bundle_import", "packages_repo", "image_mirror", "checkpoints", "vllm_serving"}, said
        # The one package: apt upgraded it on the host, the other package and its record stayed.
        assert said["packages_repo"] == "repositories.debian-12.lab-free 0.5-2 -> 0.5-3", said["packages_repo"]
        assert "packages_repo: %s: upgraded lab-free 0.5-2 -> 0.5-3" % APT_HOST in out, out[-6000:]
        assert installed(apt_host, "lab-free") == "0.5-3" and installed(apt_host, "lab-tool") == "1:2.0-1"
        assert host_changed(out) > 0
        new_image = [r for r in two["image_mirror"]["pushed"] if r not in one["image_mirror"]["pushed"]][0]
        assert said["image_mirror"].startswith("pushed: +") and said["image_mirror"].count(";") == 0, said["image_mirror"]
        assert "%s@sha256:%s…" % (changed_ref.rsplit(":", 1)[1], new_image.split("@sha256:")[1][:12]) in said["image_mirror"]
        assert "%s@sha256:%s…" % (changed_ref.rsplit(":", 1)[1], old_digest.split(":")[1][:12]) in said["image_mirror"]
        assert lab_bundle.IMAGES[0].rsplit(":", 1)[1] + "@" not in said["image_mirror"]
        assert "synced[tiny].digest %s… -> %s…" % (old_ckpt["digest"][:12], new_ckpt["digest"][:12]) in said["checkpoints"]
        assert new_ckpt["digest"][:12] in said["vllm_serving"], said["vllm_serving"]
        assert ("Checkpoint tiny: s3://%s/%s (%d files, %s, sha256-verified; this run uploaded %s and copied %s inside the store)"
                % (BUCKET, new_ckpt["prefix"], len(files), human(new_ckpt["bytes"]), human(shard.stat().st_size),
                   human(new_ckpt["bytes"] - shard.stat().st_size))) in out, out[-6000:]
        kept = [r for r in one["image_mirror"]["pushed"] if r != old_image]
        assert len(two["image_mirror"]["pushed"]) == 2 and set(kept) < set(two["image_mirror"]["pushed"]), two["image_mirror"]
        # The stage prune: the old manifest leaves the registry (the garbage collection then frees its own layer, not
        # the layer the kept image shares); the old prefix stays, a terminating pod still names it.
        assert "image_mirror: removed 1 manifest(s)" in out, out[-6000:]
        assert reg.manifest_digest(old_repo, old_digest) is None
        assert re.search(r"Kept s3://%s/%s: a pod references it: %s/(holds-old-checkpoint|llmops-serving-tiny-)"
                         % (BUCKET, re.escape(old_ckpt["prefix"]), ns), out), out[-6000:]
        assert len(s3.objects(old_ckpt["prefix"])) == len(files) + 1
        assert two["checkpoints"]["superseded"] == [{k: old_ckpt[k] for k in ("name", "bucket", "prefix", "digest")}]
        assert blob_on_disk(reg, old_layer) and blob_on_disk(reg, shared_layer)
        gc = subprocess.run(["docker-registry", "garbage-collect", str(reg.dir / "config.yml")], capture_output=True,
                            text=True, check=False)
        assert gc.returncode == 0, gc.stdout[-2000:] + gc.stderr[-2000:]
        assert not blob_on_disk(reg, old_layer) and blob_on_disk(reg, shared_layer)

        # Once no pod names it, playbooks/prune.yml removes the old prefix.
        kube.core.patch_namespaced_pod("holds-old-checkpoint", ns, {"metadata": {"finalizers": None}})
        kube.wait_for("no pod naming the old checkpoint", lambda: not pods_naming(kube, old_ckpt["digest"]), timeout=120)
        out, changed = run(kube, inv, "prune.yml", env=podman_env)
        assert changed > 0
        assert "checkpoints: removed 1 prefix(es) from the object store: s3://%s/%s" % (BUCKET, old_ckpt["prefix"]) in out, \
            out[-6000:]
        assert s3.objects(old_ckpt["prefix"]) == {} and len(s3.objects(new_ckpt["prefix"])) == len(files) + 1
        three = record(inv)
        assert three["checkpoints"]["superseded"] == [] and three["image_mirror"]["superseded"] == []

        # The node cache (the cluster's one node is this host): the prune entry point removes the old version's
        # directory and keeps the current one; check mode names it and removes nothing; a second run changes nothing.
        old_dir, new_dir = cache.path / "tiny" / old_ckpt["digest"], cache.path / "tiny" / new_ckpt["digest"]
        assert old_dir.is_dir() and (new_dir / "config.json").is_file()
        p, res, said = node_prune(kube, cache.path, three["checkpoints"]["synced"], "--check")
        assert p.returncode == 0, p.stdout[-4000:]
        assert said == "vllm_serving: localhost: would remove 1 node-cache entry: tiny/%s…." % old_ckpt["digest"][:12]
        assert old_dir.is_dir()
        p, res, said = node_prune(kube, cache.path, three["checkpoints"]["synced"])
        assert p.returncode == 0 and res["stats"]["localhost"]["changed"] == 1, p.stdout[-4000:]
        assert said == "vllm_serving: localhost: removed 1 node-cache entry: tiny/%s…." % old_ckpt["digest"][:12]
        assert not old_dir.exists() and (new_dir / "config.json").is_file()
        p, res, said = node_prune(kube, cache.path, three["checkpoints"]["synced"])
        assert p.returncode == 0 and res["stats"]["localhost"]["changed"] == 0, res["stats"]
        assert said == "vllm_serving: localhost: removed 0 node-cache entries."

        # A third site.yml run: nothing to do anywhere, the state file as it was.
        t3 = time.monotonic()
        out, changed = run(kube, inv, "site.yml", "--tags", TAGS, *bundle2, env=podman_env)
        assert changed == 0 and host_changed(out) == 0, out[-8000:]
        assert installed(apt_host, "lab-free") == "0.5-3"
        assert "No stage's record changed in this run." in out, out[-6000:]
        assert record(inv) == three
        print("phases: bundle 1 installed %.0f s, upgrade and roll %.0f s, prune %.0f s, third run %.0f s; total %.0f s"
              % (t1 - t0, t2 - t1, t3 - t2, time.monotonic() - t3, time.monotonic() - t0))
    finally:
        try:
            kube.core.patch_namespaced_pod("holds-old-checkpoint", ns, {"metadata": {"finalizers": None}})
        except kube.k8s.rest.ApiException:
            pass
        cache.remove(kube, ns)
        s3.stop()
        reg.stop()
        subprocess.run(["rm", "-rf", str(d)], check=False)
