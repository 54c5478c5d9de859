"""The harness keeps to loopback and its own bridge."""
import re


def harness_pids(cluster_dir):
    pids = {}
    for f in (cluster_dir / "pids").glob("*.pid"):
        pids[int(f.read_text().strip())] = f.stem
    return pids


def test_components_listen_only_on_loopback_or_the_bridge(kube):
    pids = harness_pids(kube.cluster_dir)
    assert set(pids.values()) >= {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                  "containerd", "kubelet", "kube-proxy"}, pids
    out = kube.run(["ss", "-H", "-l", "-n", "-t", "-u", "-p"]).stdout
    seen = {}
    for line in out.splitlines():
        cols = line.split()
        local = cols[4]
        for pid in map(int, re.findall(r"pid=(\d+)", line)):
            if pid in pids:
                addr = local.rsplit(":", 1)[0].strip("[]")
                seen.setdefault(pids[pid], set()).add(local)
                assert addr in ("127.0.0.1", "::1", "10.244.0.1"), "%s listens on %s" % (pids[pid], local)
    # the ones that serve something were found (so the check above did look at them)
    assert {"etcd", "kube-apiserver", "kubelet", "kube-proxy"} <= set(seen), seen
    assert "127.0.0.1:6443" in seen["kube-apiserver"]
