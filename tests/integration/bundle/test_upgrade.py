"""Day two (issue 18, item 1): site.yml with a newer bundle is the upgrade, on the controller's stages against real
servers on loopback - Debian's docker-registry (TLS, htpasswd, deletes enabled) as the site registry and `rclone serve
s3` standing in for MinIO (no MinIO binary is reachable here).

Bundle 1 (the lab bundle) is installed: import, image push, checkpoint sync. Bundle 2 changes one image, one checkpoint
shard and one package. site.yml with bundle 2 and llmops_keep_previous=true (the rollback window) moves only what
changed and keeps the old image and checkpoint prefix, naming them in the summary; prune.yml in check mode lists them
and removes nothing; site.yml again without the flag removes them in its stage prune (the registry's garbage collection
then frees the old image's own layer); a third run reports changed=0.

Not here: the registry host's garbage collection play (no registry host in this inventory: molecule/services runs it),
the package upgrade on a host (molecule/airgap installs from the bundle's repository), the serving roll with a request
loop (tests/integration/cluster/test_lab_upgrade.py runs this upgrade with it, through site.yml on the test cluster)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lab_bundle

sys.path.insert(0, os.path.join(lab_bundle.REPO, "tests", "integration", "checkpoints"))
from ckpt_helpers import BUCKET, RW, S3Server  # noqa: E402
from registry_server import PUSH_USER, start_registry  # noqa: E402

REPO = Path(lab_bundle.REPO)
BIN = REPO / ".venv" / "bin"
TAGS = "bundle_import,image_mirror,checkpoints,prune,summary"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("upgrade")
    lab = lab_bundle.build(tmp)
    root2, media2 = lab_bundle.build_v2(lab, tmp)
    reg = start_registry(tmp / "registry")
    s3 = S3Server(str(tmp / "s3"))
    try:
        yield dict(lab=lab, media2=media2, root2=root2, reg=reg, s3=s3, tmp=tmp)
    finally:
        s3.stop()
        reg.stop()


def site(world):
    """A site inventory whose registry and minio stages have run (their records point at the loopback servers)."""
    tmp, reg, s3 = world["tmp"], world["reg"], world["s3"]
    inv = tmp / "site"
    private = inv / ".private"
    (inv / "group_vars" / "all").mkdir(parents=True)
    private.mkdir(mode=0o700)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": str(BIN / "python")}},
        "children": {"registry": {"hosts": {"registry-1": {"ansible_host": "192.0.2.10"}}},
                     "minio": {"hosts": {"minio-1": {"ansible_host": "192.0.2.11"}}}}}}))
    (inv / "group_vars" / "all" / "site.yml").write_text(yaml.safe_dump(dict(
        bundle_import_public_key=str(world["lab"]["pub"]),
        # no cluster in this inventory: nothing else reads the object store
        checkpoints_prune_unchecked=True)))
    lab_bundle.seed_site_state(private, reg, s3, PUSH_USER, RW, BUCKET)
    return inv


def run(inv, playbook, *args):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"))
    p = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), "--limit", "localhost", *args,
                        str(REPO / "playbooks" / playbook)], capture_output=True, text=True, env=env, cwd=str(REPO),
                       check=False)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    return out, int(re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", out).group(1))


def human(n):
    """ansible's human_readable for the sizes here (KB)."""
    return "%.2f KB" % (n / 1024.0)


def record(inv):
    return json.loads((inv / ".private" / "site-state.json").read_text())


def blob_on_disk(reg, digest):
    hexd = digest.split(":", 1)[1]
    return (reg.dir / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data").is_file()


def test_upgrade_moves_what_changed_keeps_it_for_a_rollback_then_prunes_and_then_nothing(world):
    lab, reg, s3 = world["lab"], world["reg"], world["s3"]
    inv = site(world)
    out, changed = run(inv, "site.yml", "--tags", TAGS, "-e", "llmops_bundle=%s" % lab["media"])
    assert changed > 0
    one = record(inv)
    assert one["checkpoints"]["superseded"] == [] and one["image_mirror"]["superseded"] == []
    [old_ckpt] = one["checkpoints"]["synced"]
    assert len(s3.objects(old_ckpt["prefix"])) == 4  # config, tokenizer, the shard, the manifest
    changed_ref = lab_bundle.IMAGES[1]
    old_image = [r for r in one["image_mirror"]["pushed"] if changed_ref.split("/", 1)[1].split(":")[0] in r][0]
    old_repo, old_digest = old_image.split("/", 1)[1].split(":")[0], old_image.split("@")[1]
    old_manifest = json.loads((lab["root"] / "images" / "blobs" / "sha256" / old_digest.split(":")[1]).read_text())
    old_layer = old_manifest["layers"][1]["digest"]
    shared_layer = old_manifest["layers"][0]["digest"]

    # Bundle 2 with the rollback window: only what changed moves, the old content stays and the summary names it.
    out, changed = run(inv, "site.yml", "--tags", TAGS, "-e", "llmops_bundle=%s" % world["media2"],
                       "-e", "llmops_keep_previous=true")
    assert changed > 0
    two = record(inv)
    [new_ckpt] = two["checkpoints"]["synced"]
    assert new_ckpt["prefix"] != old_ckpt["prefix"]
    # The one shard that changed crosses the network; the files bundle 1 already put there are copied inside the store
    # (the summary says so; the state file keeps no reading of the run).
    assert "bytes_uploaded" not in new_ckpt and "bytes_copied" not in new_ckpt
    assert ("Checkpoint tiny: s3://%s/%s (3 files, %s, sha256-verified; this run uploaded 600.00 KB and copied %d.00 Bytes "
            "inside the store)" % (BUCKET, new_ckpt["prefix"], human(new_ckpt["bytes"]), new_ckpt["bytes"] - 600 * 1024)) in out, \
        out[-4000:]
    assert two["checkpoints"]["superseded"] == [{k: old_ckpt[k] for k in ("name", "bucket", "prefix", "digest")}]
    assert two["image_mirror"]["superseded"] == [old_image], two["image_mirror"]
    assert len(two["image_mirror"]["pushed"]) == 2 and old_image not in two["image_mirror"]["pushed"]
    assert "prune: llmops_keep_previous is true" in out and "1 image(s), 1 checkpoint prefix(es)" in out, out[-4000:]
    assert ("Kept from earlier bundles (the stage prune removes it, or playbooks/prune.yml after a rollback window): "
            "1 image(s) (%s), 1 checkpoint prefix(es) (%s)" % (old_image.split("@")[0], old_ckpt["prefix"])) in out, out[-4000:]
    assert re.search(r"prune +kept: llmops_keep_previous is true \(a rollback window; playbooks/prune.yml removes it\) +"
                     r"kept from earlier bundles: 1 image\(s\) \(%s\), 1 checkpoint prefix\(es\)" % re.escape(old_image.split("@")[0]),
                     out), out[-4000:]
    assert reg.manifest_digest(old_repo, old_digest) == old_digest
    assert len(s3.objects(old_ckpt["prefix"])) == 4

    # prune.yml in check mode: what would go, nothing removed, the records unchanged.
    out, changed = run(inv, "prune.yml", "--check")
    assert changed > 0
    assert "image_mirror: would remove 1 manifest(s) from %s: %s@%s." % (reg.host, old_repo, old_digest) in out, out[-4000:]
    assert "checkpoints: would remove 1 prefix(es) from the object store: s3://%s/%s (tiny, 4 object(s)" % (
        BUCKET, old_ckpt["prefix"]) in out, out[-4000:]
    assert reg.manifest_digest(old_repo, old_digest) == old_digest and len(s3.objects(old_ckpt["prefix"])) == 4
    assert record(inv) == two

    # site.yml again without the flag: the stage prune closes the window.
    out, changed = run(inv, "site.yml", "--tags", TAGS, "-e", "llmops_bundle=%s" % world["media2"])
    assert changed > 0
    assert "image_mirror: removed 1 manifest(s)" in out and "checkpoints: removed 1 prefix(es)" in out, out[-4000:]
    assert reg.manifest_digest(old_repo, old_digest) is None
    assert s3.objects(old_ckpt["prefix"]) == {} and len(s3.objects(new_ckpt["prefix"])) == 4
    three = record(inv)
    assert three["image_mirror"]["superseded"] == [] and three["checkpoints"]["superseded"] == []
    assert "Kept from earlier bundles" not in out
    assert re.search(r"prune +done +nothing left from earlier bundles", out), out[-4000:]
    # What the registry host's stage prune then runs (registry role, tasks_from: garbage_collect; molecule/services):
    # the old image's own layer leaves the registry's storage, the layer the kept image shares stays.
    assert blob_on_disk(reg, old_layer) and blob_on_disk(reg, shared_layer)
    gc = subprocess.run(["docker-registry", "garbage-collect", str(reg.dir / "config.yml")], capture_output=True, text=True,
                        check=False)
    assert gc.returncode == 0, gc.stdout[-2000:] + gc.stderr[-2000:]
    assert not blob_on_disk(reg, old_layer) and blob_on_disk(reg, shared_layer)

    # A third run: nothing to do anywhere.
    out, changed = run(inv, "site.yml", "--tags", TAGS, "-e", "llmops_bundle=%s" % world["media2"])
    assert changed == 0, out[-6000:]
    assert record(inv) == three
