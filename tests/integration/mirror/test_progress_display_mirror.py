"""Issue 20: the image push (llmops.onprem.oci_mirror, the task site.yml's image_mirror stage runs) into a real
registry, from a real ansible-playbook with the llmops.onprem.progress callback: through a pseudo-terminal the
line is rewritten in place, through a pipe it is plain lines; the byte counts increase to a final 100%; with the
callback not enabled there is no progress line. One image of a 160 MiB layer per run (a fresh repository, so each
run moves it)."""
import json
import os
import re
import uuid

import pytest

import mirror_layouts as L
from progress_output import env, run_in_pipe, run_in_pty

PLAY = """
- name: Push the layout into the site registry
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Push every image of the layout
      llmops.onprem.oci_mirror: %s
"""
LINE = re.compile(r"progress: image_mirror(?: [a-z]+)?: ([0-9.]+ [KMG]?i?B) / ([0-9.]+ [KMG]?i?B) \(([0-9.]+)%\)")


def size(text):
    n, unit = text.split()
    return float(n) * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]


@pytest.fixture
def play(tmp_path, registry):
    ns = "p%s" % uuid.uuid4().hex[:8]
    layout = str(tmp_path / "layout")
    L.image(layout, "ghcr.io/%s/engine:1" % ns, [L.layer(layout, 160 << 20, ns + "big")])
    args = registry.module_args(layout, progress_file=str(tmp_path / "push.progress"), state_dir=str(tmp_path / "state"),
                                chunk_size=16, parallel=2)
    path = tmp_path / "push.yml"
    path.write_text(PLAY % json.dumps(args))
    return str(path)


def lines(out):
    return [(size(d), size(t), float(p)) for d, t, p in LINE.findall(out)]


@pytest.mark.parametrize("tty", [True, False], ids=["pty", "pipe"])
def test_the_push_shows_increasing_bytes_up_to_100(tmp_path, play, tty):
    rc, out = (run_in_pty if tty else run_in_pipe)(play, env(tmp_path, True))
    assert rc == 0, out
    seen = lines(out)
    assert seen, out
    assert len(set(d for d, _t, p in seen if p < 100.0)) >= 2, out  # several updates while the push ran
    assert [d for d, _t, _p in seen] == sorted(d for d, _t, _p in seen), out
    done, total, pct = seen[-1]
    assert pct == 100.0 and done == total >= 160 << 20, out
    if tty:
        assert out.count("\x1b[1A\rprogress: image_mirror") >= 2, out
    else:
        assert "\x1b" not in out and "\r" not in out
    assert os.path.exists(str(tmp_path / "push.progress"))


def test_the_push_without_the_callback_prints_no_progress(tmp_path, play):
    rc, out = run_in_pipe(play, env(tmp_path, False))
    assert rc == 0, out
    assert "progress: " not in out and "changed: [localhost]" in out
    doc = json.loads((tmp_path / "push.progress").read_text())
    assert (doc["format"], doc["stage"], doc["state"]) == ("llmops.onprem.progress/v1", "image_mirror", "done")
    assert doc["bytes_done"] == doc["bytes_total"] >= 160 << 20 and doc["files_done"] == doc["files_total"] == 2
