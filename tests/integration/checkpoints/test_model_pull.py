"""serving/model-pull/model_pull.py (the init container's program) against a real
`rclone serve s3` on 127.0.0.1, with the read-only key pair, after checkpoint_sync put a
checkpoint there."""
import os
import time

import pytest
from ckpt_helpers import RW, fetched_bytes, make_checkpoint, pull, run_module_process, sync_args

from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint, _files


@pytest.fixture(scope="module")
def synced(s3, tmp_path_factory):
    """A 3-shard checkpoint (one shard larger than a ranged-GET chunk) synced to demo/<digest>."""
    src = make_checkpoint(str(tmp_path_factory.mktemp("src") / "demo"), shard_bytes=(70 << 20, 1 << 20, 12345))
    digest = _checkpoint.manifest_digest(_checkpoint.manifest_from_dir(src, "demo"))
    prefix = "demo/" + digest
    result = run_module_process(dict(sync_args(s3, src, prefix), name="demo"))
    assert result["manifest_digest"] == digest, result
    return dict(src=src, digest=digest, prefix=prefix, total=result["bytes_total"])


def same_tree(a, b):
    files = _checkpoint.list_files(a)
    assert files == _checkpoint.list_files(b)
    for f in files:
        assert _files.sha256_file(os.path.join(a, f)) == _files.sha256_file(os.path.join(b, f))


def test_cold_pull_then_warm_restart_moves_nothing(s3, synced, tmp_path):
    cache = str(tmp_path / "cache")
    rc, out, err = pull(s3, cache, synced["prefix"], synced["digest"], extra=["--parallel", "8"])
    assert rc == 0, err
    dest = os.path.join(cache, "demo", synced["digest"])
    assert out.splitlines()[-1] == "MODEL_PATH=" + dest
    assert fetched_bytes(out) == synced["total"]
    same_tree(synced["src"], dest)
    assert not [f for f in os.listdir(dest) if f.endswith(".part")]

    rc, out, err = pull(s3, cache, synced["prefix"], synced["digest"])
    assert rc == 0, err
    assert fetched_bytes(out) == 0 and "6 already verified in the cache, 0 to fetch" in out
    assert "re-hashing" not in out
    assert out.splitlines()[-1] == "MODEL_PATH=" + dest


def test_corrupted_cache_file_is_detected_and_fetched_again(s3, synced, tmp_path):
    cache = str(tmp_path / "cache")
    assert pull(s3, cache, synced["prefix"], synced["digest"])[0] == 0
    dest = os.path.join(cache, "demo", synced["digest"])
    shard = os.path.join(dest, "model-00002-of-00003.safetensors")
    with open(shard, "r+b") as fh:          # same size, other bytes (bit rot, a stray write)
        fh.seek(4096)
        fh.write(b"\xff" * 16)
    os.remove(os.path.join(dest, "config.json"))
    rc, out, err = pull(s3, cache, synced["prefix"], synced["digest"])
    assert rc == 0, err
    assert "cached model-00002-of-00003.safetensors is corrupt" in out
    assert fetched_bytes(out) == os.path.getsize(shard) + os.path.getsize(os.path.join(synced["src"], "config.json"))
    same_tree(synced["src"], dest)


def test_rehash_after_a_reboot_or_on_request(s3, synced, tmp_path):
    cache = str(tmp_path / "cache")
    assert pull(s3, cache, synced["prefix"], synced["digest"])[0] == 0
    rc, out, _err = pull(s3, cache, synced["prefix"], synced["digest"], extra=["--rehash"])
    assert rc == 0 and "re-hashing 6 cached file(s)" in out and fetched_bytes(out) == 0


def test_wrong_credential_exits_3(s3, synced, tmp_path):
    rc, out, err = pull(s3, str(tmp_path / "c"), synced["prefix"], synced["digest"], key=(RW[0], "not-the-secret-000000"))
    assert rc == 3
    assert "the object store refused the credential (403 SignatureDoesNotMatch)" in err
    assert "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of the read-only Secret" in err
    assert "MODEL_PATH" not in out
    rc, _out, err = pull(s3, str(tmp_path / "c"), synced["prefix"], synced["digest"], key=("nobody-key", "x" * 20))
    assert rc == 3 and "InvalidAccessKeyId" in err


def test_misspelled_or_empty_prefix_exits_4_naming_the_typo(s3, synced, tmp_path):
    typo = "demmo/" + synced["digest"]
    rc, out, err = pull(s3, str(tmp_path / "c"), typo, synced["digest"])
    assert rc == 4
    assert ("no checkpoint at s3://model-checkpoints/%s: 'demmo' does not exist under s3://model-checkpoints/; "
            "did you mean 'demo' (s3://model-checkpoints/demo)?" % typo) in err
    assert not os.path.exists(os.path.join(str(tmp_path / "c"), "demo", synced["digest"], "config.json"))
    s3.client().put_object(Bucket="model-checkpoints", Key="tarred/laguna_xs.tar", Body=b"x")
    rc, _out, err = pull(s3, str(tmp_path / "c"), "tarred", synced["digest"])
    assert rc == 4 and "the prefix exists but has no .llmops/manifest.json" in err
    rc, _out, err = pull(s3, str(tmp_path / "c"), synced["prefix"], synced["digest"], extra=["--bucket", "model-checkpoint"])
    assert rc == 4 and "bucket 'model-checkpoint' does not exist" in err and "did you mean 'model-checkpoints'?" in err


def test_wrong_digest_exits_5(s3, synced, tmp_path):
    other = "0" * 64
    rc, _out, err = pull(s3, str(tmp_path / "c"), synced["prefix"], other)
    assert rc == 5
    assert "has digest %s, not --digest %s" % (synced["digest"], other) in err


def test_usage_and_unreachable_exit_codes(s3, synced, tmp_path):
    rc, _out, err = pull(s3, str(tmp_path / "c"), synced["prefix"], "not-hex")
    assert rc == 2 and "--digest must be 64 lowercase hex digits" in err
    s3_down = type("S", (), {"url": "http://127.0.0.1:9"})()
    rc, _out, err = pull(s3_down, str(tmp_path / "c"), synced["prefix"], synced["digest"])
    assert rc == 7 and "cannot connect to http://127.0.0.1:9: " in err


def test_concurrent_pulls_download_once(s3, synced, tmp_path):
    cache = str(tmp_path / "cache")
    procs = [pull(s3, cache, synced["prefix"], synced["digest"], wait=False) for _i in range(3)]
    outs = []
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err
        outs.append(out)
    moved = sorted(fetched_bytes(o) for o in outs)
    assert moved == [0, 0, synced["total"]]
    assert any("another pull of demo holds" in o for o in outs)
    same_tree(synced["src"], os.path.join(cache, "demo", synced["digest"]))


def test_interrupted_pull_leaves_no_verified_marker_and_recovers(s3, synced, tmp_path):
    cache = str(tmp_path / "cache")
    proc = pull(s3, cache, synced["prefix"], synced["digest"], wait=False, extra=["--parallel", "1"])
    dest = os.path.join(cache, "demo", synced["digest"])
    while proc.poll() is None and not any(f.endswith(".part") for f in (os.listdir(dest) if os.path.isdir(dest) else [])):
        time.sleep(0.005)
    proc.kill()
    proc.communicate()
    assert not os.path.exists(os.path.join(dest, ".llmops-verified.json")) or proc.returncode == 0
    rc, out, err = pull(s3, cache, synced["prefix"], synced["digest"])
    assert rc == 0, err
    same_tree(synced["src"], dest)
    assert not [f for f in os.listdir(dest) if f.endswith(".part")]


def _model_pull_module(name):
    import importlib.util
    from ckpt_helpers import MODEL_PULL
    spec = importlib.util.spec_from_file_location(name, MODEL_PULL)
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    return mp


def test_files_split_into_many_ranged_gets_hash_right(s3, synced, tmp_path, monkeypatch, capsys):
    """In process, with 8 MiB ranged GETs (the 70 MiB shard in 9) fetched by 4 threads: the hashers follow each
    file's written prefix across chunks that finish in any order; the sha256 must still match the manifest."""
    from ckpt_helpers import BUCKET, RO
    mp = _model_pull_module("model_pull_split")
    monkeypatch.setattr(mp, "CHUNK", 8 << 20)
    splits = []
    real_open = mp.FileJob.open

    def spy_open(job):
        splits.append((job.entry["path"], len(job.chunks)))
        return real_open(job)
    monkeypatch.setattr(mp.FileJob, "open", spy_open)
    cache = str(tmp_path / "cache")
    rc = mp.main(["--endpoint", s3.url, "--bucket", BUCKET, "--prefix", synced["prefix"], "--model", "demo", "--digest",
                  synced["digest"], "--cache-root", cache, "--parallel", "4"],
                 env=dict(AWS_ACCESS_KEY_ID=RO[0], AWS_SECRET_ACCESS_KEY=RO[1]))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert dict(splits)["model-00001-of-00003.safetensors"] == 9 and dict(splits)["config.json"] == 1
    assert fetched_bytes(out) == synced["total"]
    same_tree(synced["src"], os.path.join(cache, "demo", synced["digest"]))


def test_short_writes_are_continued_and_the_hash_is_of_the_file(s3, synced, tmp_path, monkeypatch, capsys):
    """A pwrite that writes less than it was given (allowed by POSIX; a signal, a full quota) is continued from
    where it stopped, never taken for the whole: the file published holds every byte, and its sha256 is computed
    from what the file holds, not from the network buffer."""
    from ckpt_helpers import BUCKET, RO
    mp = _model_pull_module("model_pull_short")
    real_pwrite = os.pwrite
    calls = []

    def short_pwrite(fd, data, offset):
        calls.append(len(data))
        return real_pwrite(fd, memoryview(data)[:max(1, len(data) // 3)], offset)
    monkeypatch.setattr(mp.os, "pwrite", short_pwrite)
    cache = str(tmp_path / "cache")
    rc = mp.main(["--endpoint", s3.url, "--bucket", BUCKET, "--prefix", synced["prefix"], "--model", "demo", "--digest",
                  synced["digest"], "--cache-root", cache],
                 env=dict(AWS_ACCESS_KEY_ID=RO[0], AWS_SECRET_ACCESS_KEY=RO[1]))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert len(calls) > 3 * (synced["total"] // mp.BUF)    # every piece took several pwrites
    same_tree(synced["src"], os.path.join(cache, "demo", synced["digest"]))


def test_progress_file_counts_every_byte_and_file_once(s3, synced, tmp_path):
    """--progress-file: the final document of a cold pull counts each byte and file fetched exactly once (the
    fetching threads report in pieces, the rest at the end of each range), and says done."""
    import json
    cache, progress = str(tmp_path / "cache"), str(tmp_path / "progress.json")
    rc, out, err = pull(s3, cache, synced["prefix"], synced["digest"], extra=["--progress-file", progress])
    assert rc == 0, err
    with open(progress) as fh:
        doc = json.load(fh)
    assert (doc["state"], doc["stage"], doc["phase"]) == ("done", "model_pull", "done")
    assert doc["bytes_done"] == doc["bytes_total"] == synced["total"] == fetched_bytes(out)
    assert doc["files_done"] == doc["files_total"] == 6


def test_hashing_a_large_file_keeps_the_memory_small(s3, tmp_path):
    """A 288 MiB shard (5 ranged GETs, 4 at a time): what is hashed is read back through the page cache and leaves
    the process's mapping again, so the pull's peak RSS stays far below the file's size (the serving chart gives
    the init container 1 GiB for checkpoints of any size)."""
    import subprocess
    import sys
    from ckpt_helpers import BUCKET, MODEL_PULL, RO
    src = make_checkpoint(str(tmp_path / "src" / "big"), shard_bytes=(288 << 20,))
    digest = _checkpoint.manifest_digest(_checkpoint.manifest_from_dir(src, "big"))
    prefix = "big/" + digest
    assert run_module_process(dict(sync_args(s3, src, prefix), name="big"))["manifest_digest"] == digest
    cache = str(tmp_path / "cache")
    argv = [MODEL_PULL, "--endpoint", s3.url, "--bucket", BUCKET, "--prefix", prefix, "--model", "big", "--digest",
            digest, "--cache-root", cache, "--parallel", "4"]
    # VmHWM: this process's own peak RSS (ru_maxrss would carry pytest's, from before the exec).
    code = ("import runpy, sys\nsys.argv = %r\nrc = 0\ntry:\n    runpy.run_path(%r, run_name='__main__')\n"
            "except SystemExit as e:\n    rc = e.code\nhwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
            "sys.stderr.write('PEAK_RSS_KB=%%s\\n' %% hwm[0].split()[1])\nsys.exit(rc)\n" % (argv, MODEL_PULL))
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, AWS_ACCESS_KEY_ID=RO[0],
                          AWS_SECRET_ACCESS_KEY=RO[1]), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    peak = int(proc.stderr.rsplit("PEAK_RSS_KB=", 1)[1].split()[0]) << 10
    assert peak < 96 << 20, "peak RSS %d MiB for a 288 MiB file" % (peak >> 20)
    same_tree(src, os.path.join(cache, "big", digest))
