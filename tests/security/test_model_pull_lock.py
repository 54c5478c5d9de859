"""model-pull's node-cache lock (DIR/<model>/.lock): a pull waits for another pull of the same model on the
node at most --lock-timeout seconds, names the holder while it waits, gives up with exit 8 and a message that
says what to do, and reads no more than a bounded piece of the lock file to name the holder. The holder is
this test process (an flock on its own open file description); the store is tests/security/hostile_store.py
serving a small valid checkpoint. No sleeps: the waiter's progress line on its stdout pipe is the signal."""
import fcntl
import hashlib
import os
import selectors
import subprocess
import sys
import time

import pytest

from conftest import PEAK_MEMORY_LIMIT, ROOT, run_measured, snapshot
from hostile_store import HostileStore, Obj

from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint

MODEL_PULL = os.path.join(ROOT, "serving", "model-pull", "model_pull.py")
BUCKET, PREFIX = "models", "demo/v1"
CONFIG = b'{"model_type": "demo"}\n'
WEIGHTS = b"\x01" * 5000
HOLDER = "model-pull in pod/host demo-7f9c4-x2k8p, pid 7, since 2026-12-03T06:00:00Z"
CREDS = dict(AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="x" * 40)


def entry(path, data):
    return dict(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())


@pytest.fixture
def store():
    manifest = _checkpoint.build_manifest("demo", [entry("config.json", CONFIG), entry("model.safetensors", WEIGHTS)])
    digest = hashlib.sha256(_checkpoint.canonical_bytes(manifest)).hexdigest()
    s = HostileStore({"%s/%s" % (PREFIX, _checkpoint.MANIFEST_KEY): Obj(data=_checkpoint.canonical_bytes(manifest)),
                      "%s/config.json" % PREFIX: Obj(data=CONFIG),
                      "%s/model.safetensors" % PREFIX: Obj(data=WEIGHTS)}, bucket=BUCKET)
    s.digest = digest
    yield s
    s.stop()


@pytest.fixture
def world(tmp_path):
    """The node cache (with the model directory made) and a sibling directory for the rest of the node."""
    outside = tmp_path / "node"
    outside.mkdir()
    (outside / "hosts").write_bytes(b"127.0.0.1 localhost\n")
    cache = tmp_path / "cache"
    (cache / "demo").mkdir(parents=True)
    return str(cache), str(outside)


def hold(path, content):
    """Take the lock the way another pull does: an exclusive flock, then the holder's line."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, content)
    return fd


def argv(store, cache, *extra):
    return ["model-pull", "--endpoint", store.url, "--bucket", BUCKET, "--prefix", PREFIX, "--model", "demo",
            "--digest", store.digest, "--cache-root", cache] + list(extra)


def run_pull_measured(args):
    code = "import runpy, sys\nsys.argv = %r\nrunpy.run_path(%r, run_name='__main__')\n" % (args, MODEL_PULL)
    proc, peak = run_measured(code, env=CREDS, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr, peak


def gave_up(waited, timeout, lock, holder):
    return ("model-pull: ERROR: gave up after %d s (--lock-timeout %s) waiting for the lock %s: another pull of demo on "
            "this node holds it (%s). That pull is stuck or slower than the timeout. Find the pod on this node whose "
            "model-pull init container has been running the longest (kubectl get pods -A -o wide --field-selector "
            "spec.nodeName=<node>) and delete it if it is stuck; if no pod holds it, stop the process named above on "
            "the node. A pull that legitimately takes longer needs a larger --lock-timeout.\n"
            % (waited, timeout, lock, holder))


@pytest.mark.parametrize("timeout", ["0", "1"])
def test_a_held_lock_past_the_timeout_exits_8_naming_the_holder(store, world, timeout):
    cache, outside = world
    lock = os.path.join(cache, "demo", ".lock")
    fd = hold(lock, HOLDER.encode() + b"\n")
    before, cache_before = snapshot(outside), snapshot(cache)
    try:
        rc, out, err, _peak = run_pull_measured(argv(store, cache, "--lock-timeout", timeout))
        with open(lock, "rb") as f:
            assert f.read() == HOLDER.encode() + b"\n"   # a waiter never writes into a lock it does not hold
    finally:
        os.close(fd)
    assert rc == 8, out + err
    assert err.splitlines(True)[0] == gave_up(int(timeout), timeout, lock, HOLDER)
    if timeout == "0":
        assert "waiting" not in out
    else:
        assert "model-pull: another pull of demo holds %s (%s); waiting for it, at most 1 s\n" % (lock, HOLDER) in out
    assert "MODEL_PATH=" not in out
    assert store.requests == []    # nothing was asked of the store before the lock
    after = snapshot(cache)
    assert os.listdir(os.path.join(cache, "demo", store.digest)) == []   # made before the lock, left empty
    assert sorted(after) == sorted(list(cache_before) + [os.path.join("demo", store.digest)])
    lock_entry = os.path.join("demo", ".lock")
    assert after[lock_entry] == cache_before[lock_entry]
    assert snapshot(outside) == before


def test_a_lock_without_a_holder_line_says_so(store, world):
    cache, _outside = world
    lock = os.path.join(cache, "demo", ".lock")
    fd = hold(lock, b"")
    try:
        rc, _out, err, _peak = run_pull_measured(argv(store, cache, "--lock-timeout", "0"))
    finally:
        os.close(fd)
    assert rc == 8
    assert err.splitlines(True)[0] == gave_up(0, "0", lock, "an unknown process (the lock file names no holder)")


def test_the_waiter_proceeds_when_the_holder_releases(store, world):
    cache, _outside = world
    lock = os.path.join(cache, "demo", ".lock")
    fd = hold(lock, HOLDER.encode() + b"\n")
    proc = subprocess.Popen([sys.executable, MODEL_PULL] + argv(store, cache, "--lock-timeout", "120")[1:],
                            env=dict(os.environ, **CREDS), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        waiting = "model-pull: another pull of demo holds %s (%s); waiting for it, at most 120 s\n" % (lock, HOLDER)
        seen = b""
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        while waiting.encode() not in seen:
            left = deadline - time.monotonic()
            assert left > 0, "no waiting line within 60 s: %r" % seen
            if sel.select(left):
                chunk = os.read(proc.stdout.fileno(), 4096)
                assert chunk, "model-pull ended before waiting: %r %r" % (seen, proc.stderr.read())
                seen += chunk
        sel.close()
        assert store.requests == []   # still waiting: nothing fetched yet
    finally:
        os.close(fd)   # the holder's pull ends: its lock goes away
    out, err = proc.communicate(timeout=120)
    out = (seen + out).decode()
    assert proc.returncode == 0, out + err.decode()
    dest = os.path.join(cache, "demo", store.digest)
    assert out.splitlines()[-1] == "MODEL_PATH=%s" % dest
    with open(os.path.join(dest, "model.safetensors"), "rb") as f:
        assert f.read() == WEIGHTS
    with open(lock, "rb") as f:
        assert f.read() == b""   # the pull cleared its holder line when it let go


def test_a_huge_lock_file_is_read_bounded(store, world):
    cache, outside = world
    lock = os.path.join(cache, "demo", ".lock")
    fd = hold(lock, b"y" * (4 << 20))          # a 4 MiB "line" with no end ...
    os.ftruncate(fd, 8 << 30)                  # ... in a sparse 8 GiB file
    before = snapshot(outside)
    try:
        rc, _out, err, peak = run_pull_measured(argv(store, cache, "--lock-timeout", "0"))
        assert os.fstat(fd).st_size == 8 << 30
    finally:
        os.close(fd)
    assert rc == 8
    assert err.splitlines(True)[0] == gave_up(0, "0", lock, "y" * 200 + "...")
    assert peak < PEAK_MEMORY_LIMIT, "peak RSS %d MiB" % (peak >> 20)
    assert snapshot(outside) == before


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_a_bad_lock_timeout_is_a_usage_error(store, world, value):
    cache, _outside = world
    proc = subprocess.run([sys.executable, MODEL_PULL] + argv(store, cache, "--lock-timeout", value)[1:],
                          env=dict(os.environ, **CREDS), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--lock-timeout" in proc.stderr
    assert store.requests == []


def test_a_long_wait_repeats_its_progress_line(store, world):
    """The 'still waiting' line (every LOCK_REPORT seconds, 30 in production; 0.2 here) names the holder."""
    cache, _outside = world
    lock = os.path.join(cache, "demo", ".lock")
    fd = hold(lock, HOLDER.encode() + b"\n")
    code = ("import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('model_pull', %r)\n"
            "m = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(m)\n"
            "m.LOCK_REPORT = 0.2\n"
            "sys.exit(m.main(%r))\n") % (MODEL_PULL, argv(store, cache, "--lock-timeout", "1.5")[1:])
    try:
        proc, _peak = run_measured(code, env=CREDS, timeout=120)
    finally:
        os.close(fd)
    assert proc.returncode == 8, proc.stdout + proc.stderr
    start = "model-pull: still waiting for %s: held by %s, " % (lock, HOLDER)
    still = [line for line in proc.stdout.splitlines() if line.startswith(start)]
    assert still and all(line.endswith(" s of at most 1.5 s") for line in still), proc.stdout
    assert proc.stderr.splitlines(True)[0] == gave_up(1, "1.5", lock, HOLDER)
