"""llmops.onprem.checkpoint_prune against a real `rclone serve s3` (the MinIO stand-in): two versions of a checkpoint
synced by checkpoint_sync, the old prefix removed once nothing keeps it (check mode first), the current one and one a
pod references kept with the reason, a prefix the collection does not name never touched, a second run a no-op, and a
malformed input refused before anything is deleted."""
import json
import os
import subprocess
import sys

from ckpt_helpers import BUCKET, ROOT, RW, make_checkpoint, run_module_process, sync_args

from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint


def prune(s3, checkpoints, check=False, **kw):
    args = dict(endpoint_url=s3.url, access_key=RW[0], secret_key=RW[1], checkpoints=checkpoints, **kw)
    payload = json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check)})
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, ".cache", "collections"))
    p = subprocess.run([sys.executable, "-m", "ansible_collections.llmops.onprem.plugins.modules.checkpoint_prune"],
                       input=payload, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    try:
        return json.loads(p.stdout)
    except ValueError:
        raise AssertionError("checkpoint_prune printed no JSON (rc %d): %s %s" % (p.returncode, p.stdout, p.stderr))


def synced(s3, tmp_path, name, seed):
    src = make_checkpoint(str(tmp_path / ("%s-%d" % (name, seed))), seed=seed)
    # content-addressed as the checkpoints role names it: <model>/<manifest digest>
    digest = _checkpoint.manifest_digest(_checkpoint.manifest_from_dir(src, name))
    res = run_module_process(sync_args(s3, src, "%s/%s" % (name, digest), name=name))
    assert not res.get("failed") and res["manifest_digest"] == digest, res
    return dict(name=name, bucket=BUCKET, prefix="%s/%s" % (name, digest), digest=digest)


def test_old_prefix_goes_current_and_referenced_stay(s3, tmp_path):
    old, new = synced(s3, tmp_path, "prune-a", 1), synced(s3, tmp_path, "prune-a", 2)
    busy = synced(s3, tmp_path, "prune-b", 3)
    old_objects = s3.objects(old["prefix"])
    assert len(old_objects) == 6  # 5 files and the manifest
    entries = [old, new, busy, old]
    keep = ["%s/%s" % (BUCKET, new["prefix"])]
    in_use = {busy["digest"]: "serving/llmops-serving-b-0"}

    res = prune(s3, entries, check=True, keep=keep, in_use=in_use)
    assert res["changed"] is True, res
    assert [(r["prefix"], r["objects"], r["bytes"]) for r in res["removed"]] == [
        (old["prefix"], 6, sum(old_objects.values()))]
    assert [(k["prefix"], k["why"]) for k in res["kept"]] == [
        (new["prefix"], "the current bundle names it"),
        (busy["prefix"], "a pod references it: serving/llmops-serving-b-0")]
    assert s3.objects(old["prefix"]) == old_objects

    res = prune(s3, entries, keep=keep, in_use=in_use)
    assert res["changed"] is True and [r["prefix"] for r in res["removed"]] == [old["prefix"]], res
    assert s3.objects(old["prefix"]) == {}
    assert len(s3.objects(new["prefix"])) == 6 and len(s3.objects(busy["prefix"])) == 6

    res = prune(s3, entries, keep=keep, in_use=in_use)
    assert res["changed"] is False and res["removed"] == [] and [a["prefix"] for a in res["absent"]] == [old["prefix"]]

    # Once no pod references it, the busy one goes too.
    res = prune(s3, [busy], keep=keep)
    assert [r["prefix"] for r in res["removed"]] == [busy["prefix"]] and s3.objects(busy["prefix"]) == {}


def test_a_prefix_the_collection_does_not_name_is_never_touched(s3, tmp_path):
    mine = synced(s3, tmp_path, "prune-c", 4)
    theirs = [dict(mine, prefix="prune-c"), dict(mine, prefix="prune-c/" + "0" * 64),
              dict(mine, prefix="../" + mine["prefix"]), dict(mine, bucket="Not_A_Bucket")]
    res = prune(s3, theirs)
    assert res["changed"] is False and res["removed"] == [], res
    assert [k["why"].split(" (")[0] for k in res["kept"]] == ["not a prefix this collection names"] * 4
    assert len(s3.objects(mine["prefix"])) == 6


def test_a_malformed_in_use_digest_is_refused_before_anything_is_deleted(s3, tmp_path):
    old = synced(s3, tmp_path, "prune-d", 5)
    res = prune(s3, [old], in_use={"not-a-digest": "ns/pod"})
    assert res.get("failed") and "in_use: 'not-a-digest' is not a manifest digest (64 hex characters)" in res["msg"], res
    # An entry whose digest is not its prefix's last part (none here) is not the collection's naming: kept, untouched.
    res = prune(s3, [dict(old, digest=None)])
    assert res["removed"] == [] and res["kept"][0]["why"].startswith("not a prefix this collection names"), res
    assert len(s3.objects(old["prefix"])) == 6
