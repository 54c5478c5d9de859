"""Push the same OCI layout into a registry with llmops.onprem.oci_mirror and with `skopeo copy`,
first push and re-push, and print the times and ratios (skopeo / ours; above 1 means ours is faster).

    .venv/bin/python bench/mirror/bench.py [--base-mib 150] [--own-mib 50] [--images 3] [--big-mib 1024]

Each tool gets its own fresh registry (Debian's docker-registry, TLS, htpasswd, started here on
127.0.0.1), so neither benefits from blobs the other pushed; the layout is read once beforehand so
both start with a warm page cache. Images: N images sharing one base layer, each with a layer of its
own, plus one image with a large layer. Not part of `make test`.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration" / "mirror"))
import mirror_layouts as L  # noqa: E402
from registry_server import PUSH_USER, start_registry  # noqa: E402

MiB = 1 << 20


def build(layout, a):
    base = L.layer(layout, a.base_mib * MiB, "bench-base")
    refs = {}
    for i in range(a.images):
        own = L.layer(layout, a.own_mib * MiB, "bench-own-%d" % i)
        refs["public.ecr.aws/bench/app-%d:v1" % i] = [base, own]
    refs["nvcr.io/bench/big:v1"] = [base, L.layer(layout, a.big_mib * MiB, "bench-big")]
    for ref, layers in refs.items():
        L.image(layout, ref, layers)
    return sorted(refs)


def site_name(reg, ref):
    path, tag = ref.rsplit(":", 1)
    return "%s/%s:%s" % (reg.host, path, tag)


def ours(reg, layout, state):
    args = {"ANSIBLE_MODULE_ARGS": reg.module_args(layout, state_dir=state)}
    f = Path(state) / "args.json"
    Path(state).mkdir(exist_ok=True)
    f.write_text(json.dumps(args))
    t = time.monotonic()
    p = subprocess.run([sys.executable, str(REPO / "plugins" / "modules" / "oci_mirror.py"), str(f)], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(REPO / ".cache" / "collections")), check=False)
    dt = time.monotonic() - t
    if p.returncode:
        raise SystemExit("oci_mirror failed: %s %s" % (p.stdout[-2000:], p.stderr[-2000:]))
    r = json.loads(p.stdout)
    return dt, r["bytes_moved"]


def skopeo(reg, layout, refs, certs):
    t = time.monotonic()
    for ref in refs:
        cmd = ["skopeo", "copy", "--quiet", "--dest-cert-dir", certs,
               "--dest-creds", "%s:%s" % (PUSH_USER, reg.passwords[PUSH_USER]),
               "oci:%s:%s" % (layout, ref), "docker://" + site_name(reg, ref)]
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode:
            raise SystemExit("skopeo failed for %s: %s" % (ref, p.stderr[-2000:]))
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--base-mib", type=int, default=150)
    ap.add_argument("--own-mib", type=int, default=50)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--big-mib", type=int, default=1024)
    a = ap.parse_args()
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        raise SystemExit("needs skopeo and docker-registry (Debian packages)")
    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp:
        tmp = Path(tmp)
        layout = str(tmp / "layout")
        refs = build(layout, a)
        total = sum(f.stat().st_size for f in (tmp / "layout" / "blobs" / "sha256").iterdir())
        for f in (tmp / "layout" / "blobs" / "sha256").iterdir():  # warm the page cache for both tools
            with open(f, "rb") as fh:
                while fh.read(8 * MiB):
                    pass
        reg_ours, reg_skopeo = start_registry(tmp / "reg-ours"), start_registry(tmp / "reg-skopeo")
        certs = tmp / "certs"
        certs.mkdir()
        shutil.copy(reg_skopeo.ca, certs / "ca.crt")
        try:
            o1, moved = ours(reg_ours, layout, str(tmp / "state"))
            s1 = skopeo(reg_skopeo, layout, refs, str(certs))
            o2, moved2 = ours(reg_ours, layout, str(tmp / "state"))
            s2 = skopeo(reg_skopeo, layout, refs, str(certs))
        finally:
            reg_ours.stop()
            reg_skopeo.stop()
    print("images: %d (%d MiB layout: %d x %d MiB own layers, a %d MiB shared base, one %d MiB layer); bytes moved "
          "by oci_mirror: first %d MiB, re-push %d" % (len(refs), total // MiB, a.images, a.own_mib, a.base_mib,
                                                       a.big_mib, moved // MiB, moved2))
    print("%-10s %12s %12s %16s" % ("run", "oci_mirror s", "skopeo s", "skopeo/ours"))
    for name, o, s in (("first", o1, s1), ("re-push", o2, s2)):
        print("%-10s %12.2f %12.2f %16.2f" % (name, o, s, s / o))


if __name__ == "__main__":
    main()
