"""Run the vLLM stand-in (serving/engine-standin) as a local process on 127.0.0.1 for tests."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
STANDIN = REPO / "serving" / "engine-standin"
VLLM_ARGS = REPO / "serving" / "vllm-args"
VLLM_VERSION = (VLLM_ARGS / "VERSION").read_text().strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_checkpoint(root, architectures=("LlamaForCausalLM",), weight_bytes=4096, config=None):
    """A small checkpoint dir like the downloader writes: config.json + a weights file."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": list(architectures), "model_type": "llama", "max_position_embeddings": 4096}
    if config is not None:
        cfg = config
    (root / "config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    (root / "model.safetensors").write_bytes(b"\0" * weight_bytes)
    return root


class Standin:
    """One stand-in process; .url is its base URL, .log() its stderr so far."""

    def __init__(self, args, tmp, env=None, module_form=False):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        env = dict(os.environ, **(env or {}))
        env.setdefault("STANDIN_ARCHITECTURES_FILE", str(VLLM_ARGS / ("%s.architectures.txt" % VLLM_VERSION)))
        env.setdefault("STANDIN_VLLM_ARGS_FILE", str(VLLM_ARGS / ("%s.txt" % VLLM_VERSION)))
        env["PYTHONPATH"] = os.pathsep.join([str(STANDIN), str(STANDIN / "shim")])
        if module_form:
            cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"] + list(args)
        else:
            cmd = [sys.executable, str(STANDIN / "vllm_standin.py"), "serve"] + list(args)
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.logfile = open(Path(tmp) / ("standin-%d.log" % self.port), "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.logfile, stderr=subprocess.STDOUT)  # noqa: S603

    def log(self):
        self.logfile.flush()
        with open(self.logfile.name) as fh:
            return fh.read()

    def wait_listening(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("stand-in exited rc=%s:\n%s" % (self.proc.returncode, self.log()))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("stand-in did not listen:\n" + self.log())

    def wait_ready(self, timeout=30):
        self.wait_listening(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get("/health")[0] == 200:
                return
            time.sleep(0.05)
        raise AssertionError("stand-in not ready:\n" + self.log())

    def request(self, method, path, body=None, key=None, timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if key:
            req.add_header("Authorization", "Bearer " + key)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback
                raw = r.read().decode()
                code = r.status
        except urllib.error.HTTPError as e:
            raw, code = e.read().decode(), e.code
        try:
            return code, json.loads(raw)
        except ValueError:
            return code, raw

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfile.close()
