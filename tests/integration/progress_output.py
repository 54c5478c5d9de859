"""Runs ansible-playbook the way an operator sees it (a pseudo-terminal) or a CI log does (a pipe), and reads the
llmops.onprem.progress callback's lines out of what it printed (issue 20)."""
import os
import pty
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def env(tmp_path, enabled):
    """The repository's ansible.cfg (which enables the callback), or a copy of it without callbacks_enabled. The
    modules write and the callback reads every 0.02 s, so that a transfer of a second gives several updates."""
    cfg = os.path.join(REPO, "ansible.cfg")
    if not enabled:
        with open(cfg) as f:
            text = f.read()
        assert "callbacks_enabled = llmops.onprem.progress" in text
        cfg = str(tmp_path / "ansible.cfg")
        with open(cfg, "w") as f:
            f.write(text.replace("callbacks_enabled = llmops.onprem.progress", "")
                    .replace("collections_path = .cache/collections", "collections_path = " + os.path.join(REPO, ".cache", "collections")))
    e = dict(os.environ, ANSIBLE_CONFIG=cfg, LLMOPS_PROGRESS_INTERVAL="0.02", LLMOPS_PROGRESS_POLL_INTERVAL="0.02",
             LLMOPS_PROGRESS_PLAIN_EVERY="0")
    for k in ("LLMOPS_PROGRESS_MODE", "ANSIBLE_STDOUT_CALLBACK", "ANSIBLE_CALLBACKS_ENABLED"):
        e.pop(k, None)
    return e


def run_in_pty(play, e):
    """ansible-playbook with a pseudo-terminal as stdout and stderr: (rc, everything it wrote)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([PLAYBOOK, "-i", "localhost,", play], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=e, cwd=REPO)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=600), out.decode("utf-8", "replace")


def run_in_pipe(play, e):
    p = subprocess.run([PLAYBOOK, "-i", "localhost,", play], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=e, cwd=REPO, check=False, timeout=600)
    return p.returncode, p.stdout + p.stderr


def progress(out, stage, total):
    """(bytes done, percent) of every progress line of `stage` whose total is `total` (as the line writes it)."""
    line = re.compile(r"progress: %s(?: [a-z]+)?: ([0-9.]+) (B|KiB|MiB|GiB) / %s \(([0-9.]+)%%\)"
                      % (re.escape(stage), re.escape(total)))
    return [(round(float(m.group(1)) * UNITS[m.group(2)]), float(m.group(3))) for m in line.finditer(out)]


def assert_increasing_to_100(seen, total_bytes, out):
    assert seen, out
    running = [b for b, pct in seen if pct < 100.0]
    assert len(set(running)) >= 2, out  # several updates while the transfer ran
    assert [b for b, _p in seen] == sorted(b for b, _p in seen), out
    assert seen[-1] == (total_bytes, 100.0), out
    assert "done in" in out
