"""Pod-path benchmark: our serving path in the test cluster against the engine's own start on the
same node, in one run, with the REAL vLLM image (serving/images/build.sh vllm-cpu) and the real tiny
model (tests/tools/make_model.py).

  ours, cold   `helm upgrade --install` of serving/chart with the chart's own probe settings -> the
               pod Ready: the downloader init container fills the node cache, the engine loads,
               the startup probe passes, then the readiness probe
  ours, warm   the pod deleted -> its replacement Ready (the cache is warm: the init container
               moves 0 bytes)
  engine alone the same engine container (image, command, args, env, cache volume) as a bare pod:
               no init container, no probes -> the first /health 200 on the pod's address,
               polled every 0.1 s

It prints each figure and our overhead as a share of the engine's own start (issue 15's target: at
most 10%), and the split of the cold path (init container, engine start, probe latency).

The downloader here is the cluster tests' stand-in, an image that carries the model and copies it
into the cache (tests/integration/serving/fake_model_pull.py): it measures the init container's
mechanics, not an object-store pull (that speed is bench/checkpoints' subject).

Needs the test cluster (tests/cluster/up.sh; KUBECONFIG as it prints). Nothing here is a test;
numbers depend on the machine and on what else runs on it.

    KUBECONFIG=... .venv/bin/python bench/serving/pod_path.py [--runs 1]
"""
import argparse
import os
import statistics
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, ".cache", "collections"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "cluster"))

import conftest  # noqa: E402  (the cluster tests' Kube helpers, used outside pytest)
import serving_helpers as sh  # noqa: E402

RELEASE = "bench"
MODEL = "tiny"
START_BOUND = 900   # seconds: a bound on each start, not a wait


def kube_from_env():
    from kubernetes import client, config

    path = os.environ.get("KUBECONFIG")
    if not path or not os.path.isfile(path):
        raise SystemExit("KUBECONFIG must name the test cluster's kubeconfig (tests/cluster/up.sh prints it)")
    config.load_kube_config(path)
    return conftest.Kube(client, client.CoreV1Api(), client.AppsV1Api(), path, os.path.dirname(path))


def selector():
    return "app.kubernetes.io/instance=%s,llmops.onprem/model=%s" % (RELEASE, MODEL)


def ready_pod(kube, ns, exclude=()):
    for p in sh.live_pods(kube, ns, selector()):
        if p.metadata.name in exclude:
            continue
        for c in p.status.conditions or []:
            if c.type == "Ready" and c.status == "True":
                return p
    return None


def wait(what, predicate, interval):
    deadline = time.monotonic() + START_BOUND
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(interval)
    raise SystemExit("timed out after %d s waiting for %s" % (START_BOUND, what))


def init_seconds(pod):
    """Seconds the init containers ran (from the pod's status: start of the first to end of the last)."""
    states = [s.state.terminated for s in pod.status.init_container_statuses or [] if s.state.terminated]
    if not states:
        return float("nan")
    return (max(s.finished_at for s in states) - min(s.started_at for s in states)).total_seconds()


def engine_started_seconds(pod):
    """Seconds from the init containers' end to the engine container's start (the kubelet's part)."""
    states = [s.state.terminated for s in pod.status.init_container_statuses or [] if s.state.terminated]
    main = [s.state.running for s in pod.status.container_statuses or [] if s.state.running]
    if not states or not main:
        return float("nan")
    return (main[0].started_at - max(s.finished_at for s in states)).total_seconds()


def bare_pod(kube, ns, template):
    """The chart's engine container as a bare pod: same image, command, args, env and volumes, no init
    container, no probes, not selected by the chart's Service."""
    k8s = kube.k8s
    spec = template.spec
    engine = [c for c in spec.containers if c.name == "engine"][0]
    engine.startup_probe = engine.readiness_probe = engine.liveness_probe = None
    engine.lifecycle = None
    spec.init_containers = None
    spec.containers = [engine]
    spec.restart_policy = "Never"
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="engine-alone", labels={"bench": "engine-alone"}), spec=spec)


def health(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - the bench's own pod
            return r.status == 200
    except OSError:
        return False


def one_run(kube, ns, cache):
    vals = sh.values(cache.path, [sh.model(MODEL)])
    del vals["startup"], vals["readiness"]          # the chart's own probe settings, what a site gets
    t0 = time.monotonic()
    sh.helm(kube, ns, RELEASE, vals)
    pod = wait("the pod Ready (cold)", lambda: ready_pod(kube, ns), 0.2)
    cold = time.monotonic() - t0
    cold_init, cold_kubelet = init_seconds(pod), engine_started_seconds(pod)
    engine_start = pod.status.container_statuses[0].state.running.started_at
    ready_at = [c.last_transition_time for c in pod.status.conditions if c.type == "Ready"][0]

    t0 = time.monotonic()
    kube.core.delete_namespaced_pod(pod.metadata.name, ns, grace_period_seconds=0)
    new = wait("the replacement pod Ready (warm)", lambda: ready_pod(kube, ns, exclude=(pod.metadata.name,)), 0.2)
    warm = time.monotonic() - t0
    warm_init = init_seconds(new)

    deployment = kube.apps.list_namespaced_deployment(ns, label_selector=selector()).items[0]
    kube.apps.patch_namespaced_deployment_scale(deployment.metadata.name, ns, {"spec": {"replicas": 0}})
    wait("the chart's pods gone", lambda: not sh.live_pods(kube, ns, selector()), 0.5)
    port = [p.container_port for c in deployment.spec.template.spec.containers for p in c.ports or []][0]
    t0 = time.monotonic()
    kube.core.create_namespaced_pod(ns, bare_pod(kube, ns, deployment.spec.template))

    def up():
        p = kube.core.read_namespaced_pod("engine-alone", ns)
        if p.status.phase == "Failed":
            raise SystemExit("the bare engine pod failed:\n" + kube.pod_log(ns, "engine-alone")[-3000:])
        return p.status.pod_ip and health("http://%s:%d/health" % (p.status.pod_ip, port))
    wait("the bare engine's /health", up, 0.1)
    alone = time.monotonic() - t0
    kube.core.delete_namespaced_pod("engine-alone", ns, grace_period_seconds=0)
    return dict(cold=cold, warm=warm, alone=alone, cold_init=cold_init, cold_kubelet=cold_kubelet,
                warm_init=warm_init, probe_lag=(ready_at - engine_start).total_seconds())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    kube = kube_from_env()
    sh.build_and_load_images(kube)
    rows = []
    for _i in range(a.runs):
        ns = kube.create_namespace()
        cache = sh.CacheDir()
        try:
            sh.secrets(kube, ns)
            rows.append(one_run(kube, ns, cache))
        finally:
            cache.remove(kube, ns)
    print("vLLM %s (CPU build, the image serving/images/build.sh vllm-cpu makes), %d CPUs, %d run(s)"
          % (sh.VERSION, os.cpu_count(), len(rows)))
    print("%-58s %10s" % ("figure", "seconds"))
    for r in rows:
        print("%-58s %10.1f" % ("engine alone (bare pod created -> /health 200)", r["alone"]))
        print("%-58s %10.1f" % ("ours, warm cache (pod deleted -> replacement Ready)", r["warm"]))
        print("%-58s %10.1f" % ("ours, cold cache (helm install -> pod Ready)", r["cold"]))
        print("%-58s %10.1f" % ("  of which the init container (cold)", r["cold_init"]))
        print("%-58s %10.1f" % ("  of which init end -> engine container start", r["cold_kubelet"]))
        print("%-58s %10.1f" % ("  of which engine start -> Ready (load + probes)", r["probe_lag"]))
        print("%-58s %10.1f" % ("  init container (warm, 0 bytes moved)", r["warm_init"]))
        print("%-58s %9.1f%%   (target <= 10%%)" % ("overhead, warm: (warm - alone) / alone",
                                                    100.0 * (r["warm"] - r["alone"]) / r["alone"]))
        print("%-58s %9.1f%%" % ("overhead, cold: (cold - alone) / alone", 100.0 * (r["cold"] - r["alone"]) / r["alone"]))
    if len(rows) > 1:
        med = dict((k, statistics.median(r[k] for r in rows)) for k in ("alone", "warm", "cold"))
        print("%-58s %10.1f / %.1f / %.1f" % ("medians: alone / warm / cold", med["alone"], med["warm"], med["cold"]))
        print("%-58s %9.1f%%   (target <= 10%%)" % ("overhead of the medians, warm", 100.0 * (med["warm"] - med["alone"]) / med["alone"]))
        print("%-58s %9.1f%%" % ("overhead of the medians, cold", 100.0 * (med["cold"] - med["alone"]) / med["alone"]))
        spread = [100.0 * (r["alone"] - med["alone"]) / med["alone"] for r in rows]
        print("%-58s %+9.1f%% .. %+.1f%%" % ("spread of the engine's own start (the machine's noise)", min(spread), max(spread)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
