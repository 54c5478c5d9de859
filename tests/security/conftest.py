"""The hostile-input suite (issue 14): each test builds a malicious input from scratch and runs
the collection's real code path against it, asserting the refusal message, that nothing outside
the destination changed, and (where the input could be large) that peak memory stays bounded.

Runs in the `security` layer of tests/tools/test.sh (`make security`).
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, ".cache", "collections")
if not os.path.isdir(os.path.join(COLLECTIONS, "ansible_collections", "llmops", "onprem")):
    raise RuntimeError("run 'make setup' first: %s is missing the collection link" % COLLECTIONS)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

# The bound issue 14 sets for any input size: a refusal must not cost more than this.
PEAK_MEMORY_LIMIT = 128 * 1024 * 1024


def run_measured(code, env=None, timeout=300):
    """Run `code` in a fresh Python (with the collection importable) and return
    (CompletedProcess, peak RSS in bytes of that child). The child's own RSS high-water mark
    (ru_maxrss of RUSAGE_SELF) is printed by a wrapper, so the measure is the code under test
    and not pytest."""
    wrapper = (
        "import resource, sys\n"
        "sys.path.insert(0, %r)\n"
        "sys.path.insert(0, %r)\n"
        "try:\n"
        "    exec(compile(%r, '<measured>', 'exec'))\n"
        "finally:\n"
        "    sys.stderr.write('\\nPEAK_RSS_KB=%%d\\n' %% resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    ) % (COLLECTIONS, HERE, code)
    proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, check=False,
                          env=dict(os.environ, **(env or {})), timeout=timeout)
    peak = None
    for line in proc.stderr.splitlines():
        if line.startswith("PEAK_RSS_KB="):
            peak = int(line.split("=", 1)[1]) * 1024
    return proc, peak


def snapshot(root):
    """Every path under root (not following links) with its type, mode, size and mtime: compare
    two snapshots to prove that nothing outside a destination changed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out
