"""Delta bundle bytes versus full bundle bytes (issue 18) for a one-image, one-shard change, on the
bench's images (run.py's: N images sharing one base layer, each with a small layer of its own) and
a sharded checkpoint. Prints the ratio.

    .venv/bin/python bench/bundle_size/delta.py [--images 6] [--base-mib 96] [--app-mib 8] [--shards 64] [--shard-mib 32]

Bundle 1 is built by the collection's modules (bundle_images with skopeo, bundle_seal), imported
into a site directory by the real import (every byte verified), and the site writes its receipt
(bundle_receipt's code). Bundle 2 changes one image (a new layer of its own) and one checkpoint
shard; the full bundle 2 and its delta against the receipt are each packed into media segments
(bundle_pack), and the segment bytes are compared. Needs skopeo, the project's venv (make setup),
and about 4x the bundle size of free space under the temporary directory.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, ".cache", "collections"))
sys.path.insert(0, HERE)

from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B  # noqa: E402
from ansible_collections.llmops.onprem.plugins.module_utils import _delta as D  # noqa: E402
from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal  # noqa: E402
from run import layer, write_archive  # noqa: E402


def keypair(d):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    k = ed25519.Ed25519PrivateKey.generate()
    priv, pub = os.path.join(d, "k.pem"), os.path.join(d, "k.pub.pem")
    with open(priv, "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(pub, "wb") as f:
        f.write(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def images_into(layout, images):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
    subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible"), "localhost", "-m", "llmops.onprem.bundle_images",
                    "-a", json.dumps({"layout": layout, "images": images})], check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    with open(os.path.join(layout, "index.json")) as f:
        return [{"ref": m["annotations"]["org.opencontainers.image.ref.name"], "digest": m["digest"]}
                for m in json.load(f)["manifests"]]


def shard(path, mib):
    with open(path, "wb") as f:
        for dummy in range(mib):
            f.write(os.urandom(1 << 20))


def link_tree(src, dest):
    """bundle 2 starts as bundle 1: files hard-linked (replaced, never written in place, below)."""
    for d, dirs, files in os.walk(src):
        rel = os.path.relpath(d, src)
        os.makedirs(os.path.join(dest, rel), exist_ok=True)
        for n in files:
            if rel == "." and n in (B.MANIFEST, B.SIGNATURE):
                continue
            if n == "index.json":
                shutil.copy2(os.path.join(d, n), os.path.join(dest, rel, n))
            else:
                os.link(os.path.join(d, n), os.path.join(dest, rel, n))


def segments_bytes(media):
    return sum(os.path.getsize(os.path.join(media, n)) for n in os.listdir(media))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--base-mib", type=int, default=96)
    ap.add_argument("--app-mib", type=int, default=8)
    ap.add_argument("--shards", type=int, default=64)
    ap.add_argument("--shard-mib", type=int, default=32)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-bundle-delta-")
    t0 = time.monotonic()
    try:
        priv, pub = keypair(work)
        base = layer("base/blob", a.base_mib << 20)
        sources = []
        for i in range(a.images):
            ref = "registry.example.org/llm/app-%d:1.0" % i
            path = os.path.join(work, "img-%d.tar" % i)
            write_archive(path, ref, [base, layer("app/blob", a.app_mib << 20)])
            sources.append({"ref": ref, "source": "oci-archive:%s" % path})
        b1 = os.path.join(work, "bundle1")
        pinned1 = images_into(os.path.join(b1, "images"), sources)
        model = os.path.join(b1, "models", "bench-model")
        os.makedirs(model)
        with open(os.path.join(model, "config.json"), "w") as f:
            json.dump({"architectures": ["LlamaForCausalLM"]}, f)
        with open(os.path.join(model, "tokenizer.json"), "w") as f:
            json.dump({"model": {}}, f)
        names = ["model-%05d-of-%05d.safetensors" % (i + 1, a.shards) for i in range(a.shards)]
        for n in names:
            shard(os.path.join(model, n), a.shard_mib)
        bundle_seal.run(dict(path=b1, private_key=priv, spec={"name": "bench-1"}, versions={}, images=pinned1), False)
        site = os.path.join(work, "site", ".bundle")
        B.Importer(b1, pub, site).run()
        receipt = os.path.join(work, "site", "receipt.json")
        D.write_receipt(site, receipt)

        # Bundle 2: image 0 gets a new layer of its own; shard 1 of the checkpoint is rewritten.
        b2 = os.path.join(work, "bundle2")
        link_tree(b1, b2)
        new_src = os.path.join(work, "img-0-v2.tar")
        write_archive(new_src, sources[0]["ref"], [base, layer("app/blob", a.app_mib << 20)])
        pinned2 = images_into(os.path.join(b2, "images"), [dict(sources[0], source="oci-archive:%s" % new_src)] + sources[1:])
        changed_shard = os.path.join(b2, "models", "bench-model", names[0])
        os.unlink(changed_shard)
        shard(changed_shard, a.shard_mib)
        bundle_seal.run(dict(path=b2, private_key=priv, spec={"name": "bench-2"}, versions={}, images=pinned2), False)

        full_media, delta_dir, delta_media = (os.path.join(work, n) for n in ("full-media", "delta", "delta-media"))
        bundle_pack.run(dict(src=b2, dest=full_media, private_key=priv, segment_size="4095MiB", read_back=False,
                             progress_file=None), False)
        res = D.build_delta(b2, delta_dir, priv, receipt)
        bundle_pack.run(dict(src=delta_dir, dest=delta_media, private_key=priv, segment_size="4095MiB", read_back=False,
                             progress_file=None), False)
        with open(os.path.join(b1, B.MANIFEST), "rb") as f:
            held = {e["sha256"] for e in B.manifest_files(json.loads(f.read())).values()}
        with open(os.path.join(b2, B.MANIFEST), "rb") as f:
            files2 = B.manifest_files(json.loads(f.read()))
        changed = {p: e for p, e in files2.items() if e["sha256"] not in held}
        changed_bytes = sum(e["size"] for e in changed.values())
        full, delta = segments_bytes(full_media), segments_bytes(delta_media)
        # The import of the delta on top of bundle 1's, checked against the full bundle's manifest.
        t1 = time.monotonic()
        out = B.Importer(delta_media, pub, site).run()
        t_import = time.monotonic() - t1
        for p, e in files2.items():
            with open(os.path.join(site, p), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == e["sha256"], p
        mib = float(1 << 20)
        print("bundle_size delta: %d images (%d MiB shared base, %d MiB own layer each), checkpoint of %d shards x %d MiB; "
              "bundle 2 changes image 0 and shard 1" % (a.images, a.base_mib, a.app_mib, a.shards, a.shard_mib))
        print("  %-52s %12.1f MiB  (%d files)" % ("full bundle 2 (segments.json, manifest and segments)", full / mib, len(files2)))
        print("  %-52s %12.1f MiB  (%d files)" % ("delta bundle 2 against the site's receipt", delta / mib, res["carried"]["files"]))
        names = ", ".join(sorted(p.rsplit("/", 1)[-1][:24] for p in changed))
        print("  %-52s %12.1f MiB  (%d files: %s)" % ("content bundle 1 did not hold", changed_bytes / mib, len(changed), names))
        print("  %-52s %12.1f KiB" % ("delta overhead beyond that content (manifest, tar)", (delta - changed_bytes) / 1024.0))
        print("  ratio delta / full: %.4f (%.2f%%); overhead / full: %.5f%%" % (delta / float(full), 100.0 * delta / full,
                                                                                100.0 * (delta - changed_bytes) / full))
        print("  delta import on the site: %.1f s (%d files taken from the last import, hashed; %d copied from the delta)"
              % (t_import, out["delta"]["held"], out["files_copied"]))
        print("  (bench run %.0f s)" % (time.monotonic() - t0))
    finally:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
