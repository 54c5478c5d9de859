"""Helpers and fixtures for the checkpoint tests: a real `rclone serve s3` on 127.0.0.1 (a fresh data
directory, two key pairs), checkpoint generators, and runners for checkpoint_sync as real
Ansible (`ansible localhost -m`) and as a plain module process (to kill it mid-upload), and
for serving/model-pull/model_pull.py."""
import ctypes
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
VENV_BIN = os.path.dirname(sys.executable)
RCLONE = os.path.join(VENV_BIN, "rclone")
ANSIBLE = os.path.join(VENV_BIN, "ansible")
MODEL_PULL = os.path.join(ROOT, "serving", "model-pull", "model_pull.py")
RW = ("llmops-ckpt-rw", "rw-secret-0123456789abcdefghijklmnop")
RO = ("llmops-ckpt-ro", "ro-secret-0123456789abcdefghijklmnop")
BUCKET = "model-checkpoints"


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class S3Server(object):
    """`rclone serve s3` on ``host`` (default loopback; the cluster tests give the pod bridge's gateway, which pods
    reach) with the read-write and the read-only key pair."""

    def __init__(self, base, host="127.0.0.1"):
        self.data = os.path.join(base, "data")
        os.makedirs(os.path.join(self.data, BUCKET))
        self.port = free_port(host)
        self.url = "http://%s:%d" % (host, self.port)
        self.log = open(os.path.join(base, "rclone.log"), "wb")
        self.proc = subprocess.Popen(
            [RCLONE, "serve", "s3", "--config", "/dev/null", "--addr", "%s:%d" % (host, self.port),
             "--auth-key", "%s,%s" % RW, "--auth-key", "%s,%s" % RO, self.data],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((host, self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("rclone serve s3 did not start: see %s" % self.log.name)
                time.sleep(0.1)

    def client(self, key=RW):
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=key[0], aws_secret_access_key=key[1],
                            region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))

    def objects(self, prefix):
        """{relative key: size} under the prefix."""
        out = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
            for o in page.get("Contents", []):
                out[o["Key"][len(prefix) + 1:]] = o["Size"]
        return out

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(str(tmp_path_factory.mktemp("s3")))
    yield server
    server.stop()


def write_safetensors(path, tensors):
    """tensors: {name: (dtype, shape, bytes)} -> a real safetensors file (the safetensors library)."""
    keep, specs = [], {}
    for name, (dtype, shape, data) in tensors.items():
        buf = ctypes.create_string_buffer(data, len(data))
        keep.append(buf)
        specs[name] = safetensors.TensorSpec(dtype=dtype, shape=shape, data_ptr=ctypes.addressof(buf), data_len=len(data))
    with open(path, "wb") as fh:
        fh.write(safetensors.serialize(specs, metadata={"format": "pt"}))


def make_checkpoint(root, shard_bytes=(4096, 4096), seed=1):
    """A Hugging Face checkpoint: config, tokenizer, index and len(shard_bytes) shards, each holding one
    uint8 tensor of that many (random) bytes."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "config.json"), "w") as fh:
        json.dump({"architectures": ["LlamaForCausalLM"], "seed": seed}, fh)
    with open(os.path.join(root, "tokenizer.json"), "w") as fh:
        json.dump({"version": "1.0", "model": {"type": "BPE"}}, fh)
    weight_map = {}
    n = len(shard_bytes)
    for i, size in enumerate(shard_bytes):
        name = "model-%05d-of-%05d.safetensors" % (i + 1, n)
        write_safetensors(os.path.join(root, name), {"w%d" % i: ("uint8", [size], os.urandom(size))})
        weight_map["w%d" % i] = name
    with open(os.path.join(root, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {}, "weight_map": weight_map}, fh)
    return root


@pytest.fixture
def ckpt(tmp_path):
    return make_checkpoint(str(tmp_path / "ckpt"))


def module_env():
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = os.path.join(ROOT, "ansible.cfg")
    env["ANSIBLE_COLLECTIONS_PATH"] = os.path.join(ROOT, ".cache", "collections")
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.builtin.json"
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env["ANSIBLE_PYTHON_INTERPRETER"] = sys.executable
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    return env


def sync_args(s3, src, prefix, **kw):
    args = dict(endpoint_url=s3.url, access_key=RW[0], secret_key=RW[1], src=src, bucket=BUCKET, prefix=prefix)
    args.update(kw)
    return args


@pytest.fixture
def ansible_sync(tmp_path):
    """Run llmops.onprem.checkpoint_sync with `ansible localhost -m` (argument spec and all): the result dict."""
    def run(args, check=False, diff=False):
        cmd = [ANSIBLE, "localhost", "-c", "local", "-m", "llmops.onprem.checkpoint_sync", "-a", json.dumps(args)]
        cmd += ["--check"] if check else []
        cmd += ["--diff"] if diff else []
        proc = subprocess.run(cmd, env=module_env(), capture_output=True, text=True, cwd=ROOT, check=False)
        try:
            out = json.loads(proc.stdout)
            return out["plays"][0]["tasks"][0]["hosts"]["localhost"]
        except (ValueError, KeyError, IndexError):
            raise AssertionError("ansible failed (%s):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr))
    return run


def module_process(args, check=False):
    """Start checkpoint_sync as a plain module process (what Ansible runs on the target)."""
    payload = {"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check)}
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, ".cache", "collections"))
    return subprocess.Popen([sys.executable, "-m", "ansible_collections.llmops.onprem.plugins.modules.checkpoint_sync"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=ROOT), json.dumps(payload)


def run_module_process(args, check=False):
    proc, payload = module_process(args, check)
    out, err = proc.communicate(payload.encode())
    try:
        return json.loads(out)
    except ValueError:
        raise AssertionError("module process failed (%s): %s %s" % (proc.returncode, out, err))


def pull(s3, cache, prefix, digest, model="demo", key=RO, extra=None, wait=True):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key[0], AWS_SECRET_ACCESS_KEY=key[1])
    cmd = [sys.executable, MODEL_PULL, "--endpoint", s3.url, "--bucket", BUCKET, "--prefix", prefix, "--model", model,
           "--digest", digest, "--cache-root", cache] + (extra or [])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate()
    return proc.returncode, out, err


def fetched_bytes(out):
    """The byte count of model-pull's 'done: N bytes fetched' line."""
    for line in out.splitlines():
        if line.startswith("model-pull: done: "):
            return int(line.split()[2])
    raise AssertionError("no done line in:\n" + out)
