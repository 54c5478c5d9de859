#!/usr/bin/env python
"""vllm-standin: a CPU STAND-IN for the vLLM OpenAI-compatible server, for labs and tests.

It is NOT vLLM and generates no real text. It accepts vLLM's command line
(``vllm serve MODEL ...`` or ``python -m vllm.entrypoints.openai.api_server --model ...``),
reads the checkpoint directory the downloader placed (``config.json`` must parse and name a
supported architecture, or it exits with vLLM's own error text), pretends to load and warm up,
and then speaks vLLM's HTTP contract: /health, /ping, /version, /metrics, /v1/models,
/v1/completions, /v1/chat/completions and /invocations. Text at temperature 0 is a
deterministic function of the model name and the prompt.

Standard library only (Python 3.8+). Knobs (environment; a flag of the same name in lower
case with dashes wins, e.g. ``--standin-load-seconds 5``):

  STANDIN_LOAD_SECONDS       seconds "loading weights" (/health 503 meanwhile); default 0
  STANDIN_WARMUP_SECONDS     seconds of warm-up after loading (still 503); default 0
  STANDIN_DELAY_PER_TOKEN    seconds per generated token (slow requests, drain tests); default 0
  STANDIN_DRAIN_SECONDS      on SIGTERM, how long in-flight requests may take; default: vLLM's
                             --shutdown-timeout when given, else 30
  STANDIN_FAIL_AT_START      if set, log this text as an error and exit 1 before listening
  STANDIN_ARCHITECTURES_FILE supported architectures, one a line (default: architectures.txt
                             beside this file, else a built-in short list)
  STANDIN_VLLM_ARGS_FILE     vLLM's flags, one a line (the first field of each line of
                             serving/vllm-args/<version>.txt): any other flag is refused like
                             vLLM's argparse does (default: vllm-args.txt beside this file, if any)
"""
import argparse
import hashlib
import json
import os
import random
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VLLM_VERSION = "0.32.0"  # the CPU vLLM whose command line it accepts (serving/vllm-args/VERSION)
HERE = os.path.dirname(os.path.abspath(__file__))
BUILTIN_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "GPT2LMHeadModel",
                         "GemmaForCausalLM", "Gemma2ForCausalLM", "Phi3ForCausalLM", "OPTForCausalLM",
                         "MixtralForCausalLM", "GPTNeoXForCausalLM")
WORDS = ("the", "model", "answers", "from", "a", "stand-in", "engine", "on", "cpu", "with", "tokens",
         "that", "are", "deterministic", "for", "each", "prompt", "and", "name", "served", "here", "site",
         "cluster", "node", "cache", "weights", "ready", "request")
QUANTIZATIONS = ("aqlm", "awq", "deepspeedfp", "tpu_int8", "fp8", "ptpc_fp8", "fbgemm_fp8", "modelopt", "marlin",
                 "gguf", "gptq_marlin_24", "gptq_marlin", "awq_marlin", "gptq", "compressed-tensors",
                 "bitsandbytes", "qqq", "hqq", "experts_int8", "neuron_quant", "ipex", "quark", "moe_wna16")


def log(level, msg, *args):
    """vLLM-like log line on stderr."""
    text = msg % args if args else msg
    sys.stderr.write("%s %s [vllm_standin] %s\n" % (level, time.strftime("%m-%d %H:%M:%S"), text))
    sys.stderr.flush()


def _lines(path):
    with open(path, encoding="utf-8") as fh:
        return [ln.split()[0] for ln in fh if ln.strip() and not ln.startswith("#")]


def knob(args, name, default, kind=float):
    value = getattr(args, name.lower(), None)
    if value is None:
        value = os.environ.get(name.upper(), default)
    try:
        return kind(value)
    except ValueError:
        raise SystemExit("vllm: error: %s must be a %s, got %r" % (name.upper(), kind.__name__, value))


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid int value: %r" % text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more, got %d" % value)
    return value


def memory_bytes(text):
    """vLLM's human-readable sizes: 1024, 64M, 4G, 1.5GiB-like k/m/g/t suffixes (decimal and binary)."""
    t = str(text).strip()
    low = t.lower()
    units = (("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("tib", 1 << 40),
             ("k", 1000), ("m", 1000 ** 2), ("g", 1000 ** 3), ("t", 1000 ** 4))
    for suffix, factor in units:
        if low.endswith(suffix):
            try:
                return int(float(low[:-len(suffix)]) * factor)
            except ValueError:
                break
    try:
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid memory size: %r" % text)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid int value: %r" % text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1, got %d" % value)
    return value


def fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid float value: %r" % text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("must be in (0, 1], got %s" % text)
    return value


def lora_module(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError("expected NAME=PATH, got %r" % text)
    name, path = text.split("=", 1)
    return name, path


def parser():
    p = argparse.ArgumentParser(prog="vllm", description="vLLM stand-in (CPU, for labs and tests)")
    p.add_argument("--model", default=None)
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=positive_int, default=8000)
    p.add_argument("--api-key", default=None)
    p.add_argument("--tensor-parallel-size", "-tp", type=positive_int, default=1)
    p.add_argument("--pipeline-parallel-size", "-pp", type=positive_int, default=1)
    p.add_argument("--max-model-len", type=positive_int, default=None)
    p.add_argument("--max-num-seqs", type=positive_int, default=256)
    p.add_argument("--max-num-batched-tokens", type=positive_int, default=None)
    p.add_argument("--gpu-memory-utilization", type=fraction, default=0.9)
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--quantization", "-q", choices=QUANTIZATIONS + ("None",), default=None)
    p.add_argument("--enable-lora", action="store_true")
    p.add_argument("--max-loras", type=positive_int, default=1)
    p.add_argument("--max-lora-rank", type=positive_int, default=16)
    p.add_argument("--lora-modules", nargs="+", type=lora_module, default=[])
    p.add_argument("--dtype", choices=("auto", "half", "float16", "bfloat16", "float", "float32"), default="auto")
    p.add_argument("--enable-log-requests", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--kv-cache-memory-bytes", type=memory_bytes, default=None)
    p.add_argument("--shutdown-timeout", type=non_negative_int, default=None)
    p.add_argument("--ssl-keyfile", default=None)
    p.add_argument("--ssl-certfile", default=None)
    for name in ("load-seconds", "warmup-seconds", "delay-per-token", "drain-seconds", "fail-at-start",
                 "architectures-file", "vllm-args-file"):
        p.add_argument("--standin-" + name, default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv):
    """vLLM's two command lines -> (namespace, ignored flags)."""
    argv = list(argv)
    if argv and argv[0] == "serve":  # `vllm serve MODEL [flags]`
        argv = argv[1:]
        if not argv or argv[0].startswith("-"):
            raise SystemExit("vllm serve: error: the following arguments are required: model_tag")
        argv = ["--model", argv[0]] + argv[1:]
    p = parser()
    args, rest = p.parse_known_args(argv)
    ignored = [r for r in rest if r.startswith("-")]
    known = None
    args_file = args.standin_vllm_args_file or os.environ.get("STANDIN_VLLM_ARGS_FILE") or os.path.join(HERE, "vllm-args.txt")
    if os.path.isfile(args_file):
        known = set(_lines(args_file))
    unknown = [f for f in ignored if known is not None and f.split("=", 1)[0] not in known]
    if unknown:
        p.error("unrecognized arguments: %s" % " ".join(unknown))
    if args.model is None:
        args.model = "facebook/opt-125m"
    if args.enable_lora is False and args.lora_modules:
        p.error("--lora-modules needs --enable-lora")
    return args, ignored


def supported_architectures(args):
    path = args.standin_architectures_file or os.environ.get("STANDIN_ARCHITECTURES_FILE") or os.path.join(HERE, "architectures.txt")
    if os.path.isfile(path):
        return _lines(path)
    return list(BUILTIN_ARCHITECTURES)


def load_checkpoint(args):
    """Read the checkpoint dir like vLLM would; return (config dict, weight bytes). Exits on error."""
    model = args.model
    if not os.path.isdir(model):
        raise RuntimeError("OSError: %s is not a local folder and the Hugging Face Hub is offline "
                           "(HF_HUB_OFFLINE=1): the checkpoint was not placed where --model points" % model)
    config_path = os.path.join(model, "config.json")
    if not os.path.isfile(config_path):
        raise RuntimeError("OSError: %s does not appear to have a file named config.json" % model)
    try:
        with open(config_path, encoding="utf-8") as fh:
            config = json.load(fh)
    except ValueError as e:
        raise RuntimeError("OSError: It looks like the config file at '%s' is not a valid JSON file: %s" % (config_path, e))
    archs = config.get("architectures") or []
    supported = supported_architectures(args)
    if not any(a in supported for a in archs):
        # vLLM's registry refusal, verbatim (vllm/model_executor/models/registry.py).
        raise RuntimeError("ValueError: Model architectures %r are not supported for now. "
                           "Supported architectures: dict_keys(%r)" % (archs, supported))
    limit = config.get("max_position_embeddings")
    if args.max_model_len and limit and args.max_model_len > limit:
        raise RuntimeError("ValueError: User-specified max_model_len (%d) is greater than the derived max_model_len "
                           "(max_position_embeddings=%d in model's config.json). This may lead to incorrect model "
                           "outputs or CUDA errors." % (args.max_model_len, limit))
    total = 0
    for root, _dirs, files in os.walk(model):
        for f in files:
            if f.endswith((".safetensors", ".bin", ".pt", ".gguf")):
                total += os.path.getsize(os.path.join(root, f))
    return config, total


class Engine:
    """State shared by the request threads."""

    def __init__(self, args, config, weight_bytes):
        self.args = args
        self.config = config
        self.weight_bytes = weight_bytes
        self.served = args.served_model_name or [args.model]
        self.loras = dict(args.lora_modules)
        self.max_model_len = args.max_model_len or config.get("max_position_embeddings") or 2048
        self.delay_per_token = knob(args, "standin_delay_per_token", 0)
        self.drain_seconds = knob(args, "standin_drain_seconds", 30 if args.shutdown_timeout is None else args.shutdown_timeout)
        self.state = "loading"  # loading -> warming_up -> ready -> draining
        self.lock = threading.Lock()
        self.running = 0
        self.idle = threading.Condition(self.lock)
        self.counters = dict(success=0, prompt_tokens=0, generation_tokens=0, errors=0)
        self.started = time.time()

    # generation ---------------------------------------------------------------------------
    def generate(self, model, prompt, max_tokens, temperature, seed):
        if temperature and temperature > 0:
            rng = random.Random(seed if seed is not None else time.time_ns())
        else:
            rng = random.Random(int.from_bytes(hashlib.sha256((model + "\0" + prompt).encode()).digest()[:8], "big"))
        words = []
        for _token in range(max_tokens):
            if self.delay_per_token:
                time.sleep(self.delay_per_token)
            words.append(rng.choice(WORDS))
        return " " + " ".join(words) if words else ""

    def admit(self):
        with self.lock:
            if self.state != "ready":
                return False
            self.running += 1
            return True

    def release(self):
        with self.lock:
            self.running -= 1
            self.idle.notify_all()

    def drain(self):
        """Stop taking requests, wait for in-flight ones up to the budget; True when all finished."""
        with self.lock:
            self.state = "draining"
            deadline = time.monotonic() + self.drain_seconds
            while self.running and time.monotonic() < deadline:
                self.idle.wait(max(0.0, min(0.5, deadline - time.monotonic())))
            return self.running == 0


def count_tokens(text):
    return max(1, len(str(text).split()))


def error_body(message, err_type, code):
    return {"object": "error", "message": message, "type": err_type, "param": None, "code": code}


class Handler(BaseHTTPRequestHandler):
    server_version = "vllm-standin/" + VLLM_VERSION
    protocol_version = "HTTP/1.1"
    engine = None  # set by serve()

    def log_message(self, fmt, *args):  # noqa: A003 - BaseHTTPRequestHandler's name
        if self.engine.args.enable_log_requests:
            log("INFO", "%s - %s", self.address_string(), fmt % args)

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_text(self, code, text, ctype="text/plain; charset=utf-8"):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def authorized(self):
        token = os.environ.get("VLLM_API_KEY") or self.engine.args.api_key
        if not token or not self.path.startswith("/v1"):
            return True
        if self.headers.get("Authorization") == "Bearer " + token:
            return True
        self.send_json(401, {"error": "Unauthorized"})  # what vLLM answers, verbatim
        return False

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            self.send_json(400, error_body("Invalid JSON body: %s" % e, "BadRequestError", 400))
            return None
        if not isinstance(body, dict):
            self.send_json(400, error_body("The request body must be a JSON object", "BadRequestError", 400))
            return None
        return body

    def health(self):
        if self.engine.state == "ready":
            self.send_text(200, "")
        else:
            self.send_text(503, self.engine.state)

    def do_GET(self):  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/ping"):
            return self.health()
        if path == "/version":
            return self.send_json(200, {"version": VLLM_VERSION, "standin": True})
        if path == "/metrics":
            return self.send_text(200, self.metrics(), "text/plain; version=0.0.4; charset=utf-8")
        if not self.authorized():
            return None
        if path == "/v1/models":
            return self.send_json(200, {"object": "list", "data": self.models()})
        return self.send_json(404, {"detail": "Not Found"})

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/ping":
            return self.health()
        if not self.authorized():
            return None
        routes = {"/v1/completions": "completion", "/v1/chat/completions": "chat", "/invocations": None}
        if path not in routes:
            return self.send_json(404, {"detail": "Not Found"})
        body = self.read_json()
        if body is None:
            return None
        kind = routes[path] or ("chat" if "messages" in body else "completion")
        if not self.engine.admit():
            self.engine.counters["errors"] += 1
            return self.send_json(503, error_body("The server is %s and takes no requests" % self.engine.state,
                                                  "ServiceUnavailableError", 503))
        try:
            return self.complete(kind, body)
        finally:
            self.engine.release()

    def models(self):
        e = self.engine
        created = int(e.started)
        data = [dict(id=name, object="model", created=created, owned_by="vllm", root=e.args.model, parent=None,
                     max_model_len=e.max_model_len, permission=[]) for name in e.served]
        data += [dict(id=name, object="model", created=created, owned_by="vllm", root=path, parent=e.served[0],
                      max_model_len=None, permission=[]) for name, path in e.loras.items()]
        return data

    def complete(self, kind, body):
        e = self.engine
        model = body.get("model") or e.served[0]
        if model not in e.served and model not in e.loras:
            return self.send_json(404, error_body("The model `%s` does not exist." % model, "NotFoundError", 404))
        if body.get("stream"):
            return self.send_json(400, error_body("stream=true is not supported by the vLLM stand-in",
                                                  "BadRequestError", 400))
        if kind == "chat":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return self.send_json(400, error_body("messages must be a non-empty list", "BadRequestError", 400))
            prompt = "\n".join("%s: %s" % (m.get("role", ""), m.get("content", "")) for m in messages if isinstance(m, dict))
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list):
                prompt = " ".join(str(p) for p in prompt)
            if not isinstance(prompt, str):
                return self.send_json(400, error_body("prompt must be a string", "BadRequestError", 400))
        prompt_tokens = count_tokens(prompt)
        default_max = 16 if kind == "completion" else e.max_model_len - prompt_tokens
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens")) or default_max
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return self.send_json(400, error_body("max_tokens must be at least 1, got %r." % (max_tokens,),
                                                  "BadRequestError", 400))
        if prompt_tokens + max_tokens > e.max_model_len:
            return self.send_json(400, error_body(
                "This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the "
                "messages, %d in the completion). Please reduce the length of the messages or completion."
                % (e.max_model_len, prompt_tokens + max_tokens, prompt_tokens, max_tokens), "BadRequestError", 400))
        temperature = body.get("temperature", 1.0)
        text = e.generate(model, prompt, max_tokens, temperature, body.get("seed"))
        with e.lock:
            e.counters["success"] += 1
            e.counters["prompt_tokens"] += prompt_tokens
            e.counters["generation_tokens"] += max_tokens
        usage = dict(prompt_tokens=prompt_tokens, completion_tokens=max_tokens, total_tokens=prompt_tokens + max_tokens)
        rid = hashlib.sha256(("%s%s" % (time.time_ns(), threading.get_ident())).encode()).hexdigest()[:32]
        if kind == "chat":
            choice = dict(index=0, message=dict(role="assistant", content=text.strip(), tool_calls=[]),
                          logprobs=None, finish_reason="length", stop_reason=None)
            out = dict(id="chatcmpl-" + rid, object="chat.completion", created=int(time.time()), model=model,
                       choices=[choice], usage=usage)
        else:
            choice = dict(index=0, text=text, logprobs=None, finish_reason="length", stop_reason=None)
            out = dict(id="cmpl-" + rid, object="text_completion", created=int(time.time()), model=model,
                       choices=[choice], usage=usage)
        return self.send_json(200, out)

    def metrics(self):
        e = self.engine
        labels = 'model_name="%s"' % e.served[0]
        lines = [
            "# HELP vllm:num_requests_running Number of requests currently running on GPU.",
            "# TYPE vllm:num_requests_running gauge",
            "vllm:num_requests_running{%s} %d" % (labels, e.running),
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            "vllm:num_requests_waiting{%s} 0" % labels,
            "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.",
            "# TYPE vllm:gpu_cache_usage_perc gauge",
            "vllm:gpu_cache_usage_perc{%s} 0.0" % labels,
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            "vllm:prompt_tokens_total{%s} %d" % (labels, e.counters["prompt_tokens"]),
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            "vllm:generation_tokens_total{%s} %d" % (labels, e.counters["generation_tokens"]),
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
            'vllm:request_success_total{finished_reason="length",%s} %d' % (labels, e.counters["success"]),
            "# HELP vllm_standin_info This server is the vLLM stand-in, not vLLM.",
            "# TYPE vllm_standin_info gauge",
            'vllm_standin_info{version="%s",state="%s"} 1' % (VLLM_VERSION, e.state),
        ]
        return "\n".join(lines) + "\n"


def serve(argv):
    args, ignored = parse_args(argv)
    log("INFO", "vLLM STAND-IN (CPU, no real model) imitating vLLM %s", VLLM_VERSION)
    if ignored:
        log("INFO", "engine flags accepted and ignored by the stand-in: %s", " ".join(ignored))
    fail = args.standin_fail_at_start or os.environ.get("STANDIN_FAIL_AT_START")
    if fail:
        log("ERROR", "%s", fail)
        return 1
    try:
        config, weight_bytes = load_checkpoint(args)
    except RuntimeError as e:
        log("ERROR", "Engine failed to start: %s", e)
        print(str(e), file=sys.stderr)
        return 1
    engine = Engine(args, config, weight_bytes)
    Handler.engine = engine
    httpd = ThreadingHTTPServer((args.host or "0.0.0.0", args.port), Handler)  # noqa: S104 - vLLM's default
    httpd.daemon_threads = True
    scheme = "http"
    if args.ssl_certfile:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        scheme = "https"
    stop = threading.Event()

    def on_term(signum, _frame):
        log("INFO", "Received %s, draining: no new requests, in-flight ones get %ss",
            signal.Signals(signum).name, engine.drain_seconds)
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    threading.Thread(target=httpd.serve_forever, kwargs=dict(poll_interval=0.1), daemon=True).start()
    log("INFO", "Starting vLLM API server on %s://%s:%d", scheme, args.host or "0.0.0.0", args.port)
    log("INFO", "Starting to load model %s (architectures %s, tensor parallel %d)...",
        args.model, config.get("architectures"), args.tensor_parallel_size)
    load = knob(args, "standin_load_seconds", 0)
    if stop.wait(load):
        httpd.shutdown()
        return 0
    log("INFO", "Loading weights took %.2f seconds (%d bytes)", load, weight_bytes)
    engine.state = "warming_up"
    warm = knob(args, "standin_warmup_seconds", 0)
    t0 = time.monotonic()
    engine.generate(engine.served[0], "warm-up", 4, 0, None)
    if stop.wait(max(0.0, warm - (time.monotonic() - t0))):
        httpd.shutdown()
        return 0
    log("INFO", "Warm-up done in %.2f seconds", time.monotonic() - t0)
    with engine.lock:
        engine.state = "ready"
    log("INFO", "Application startup complete.")
    stop.wait()
    t0 = time.monotonic()
    drained = engine.drain()
    log("INFO" if drained else "WARNING", "Drain %s after %.2fs (%d requests still running)",
        "complete" if drained else "budget exhausted", time.monotonic() - t0, engine.running)
    time.sleep(0.05)  # let the last responses flush
    httpd.shutdown()
    httpd.server_close()
    log("INFO", "Shutting down the stand-in.")
    return 0 if drained else 1


def main(argv=None):
    return serve(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
