"""Issue 20: live progress in ansible-playbook's own output. A real ansible-playbook runs the bundle_import role
(the real bundle_verify module) on a generated bundle of 192 MiB with the llmops.onprem.progress callback:

- through a pseudo-terminal the progress line is rewritten in place, its byte counts increase, the last says 100%;
- through a pipe (a CI log) the same shows as plain lines, without terminal control characters;
- with the callback not enabled the output has no progress line at all;
- a looped task (bundle_verify twice, a custom loop_var, as the checkpoints role's sync loops) shows each item's
  transfer from the progress file its templated path names.

The modules write at most every LLMOPS_PROGRESS_INTERVAL seconds and the callback reads every
LLMOPS_PROGRESS_POLL_INTERVAL seconds; both are set small here so that a transfer of a second or so gives
several updates. Nothing waits on time: each run ends when ansible-playbook exits."""
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from progress_output import assert_increasing_to_100, env, progress, run_in_pipe, run_in_pty
from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal

SHARDS, SHARD = 8, 24 << 20
TOTAL = SHARDS * SHARD
PLAY = """
- name: Import a bundle with the role site.yml uses
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    llmops_bundle: %(media)s
  roles:
    - role: llmops.onprem.bundle_import
      bundle_import_public_key: %(pub)s
      bundle_import_dest: %(dest)s
"""


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("progress")
    k = ed25519.Ed25519PrivateKey.generate()
    priv, pub = tmp / "k.pem", tmp / "k.pub.pem"
    priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    root = tmp / "bundle"
    for i in range(SHARDS):
        p = root / "models" / "m" / ("shard-%d.safetensors" % i)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(SHARD))
    bundle_seal.run(dict(path=str(root), private_key=str(priv), spec={}, versions={}, images=[]), False)
    bundle_pack.run(dict(src=str(root), dest=str(tmp / "media"), private_key=str(priv), segment_size="64MiB",
                         read_back=False, progress_file=None), False)
    return dict(media=str(tmp / "media"), pub=str(pub))


def playbook(tmp_path, media):
    dest = tmp_path / "dest"
    play = tmp_path / "import.yml"
    play.write_text(PLAY % dict(media=media["media"], pub=media["pub"], dest=dest))
    return str(play), dest


def seen(out):
    return progress(out, "bundle_import", "192.0 MiB")


def test_on_a_terminal_the_line_is_rewritten_in_place_up_to_100(tmp_path, media):
    play, dest = playbook(tmp_path, media)
    rc, out = run_in_pty(play, env(tmp_path, True))
    assert rc == 0, out
    assert_increasing_to_100(seen(out), TOTAL, out)
    assert "(100.0%), 8/8 files" in out
    # every update after the first moves up onto the previous progress line and clears it
    assert out.count("\x1b[1A\rprogress: bundle_import") >= 2, out
    assert (dest / "models" / "m" / "shard-7.safetensors").stat().st_size == SHARD


def test_without_a_terminal_plain_lines_up_to_100(tmp_path, media):
    play, _dest = playbook(tmp_path, media)
    rc, out = run_in_pipe(play, env(tmp_path, True))
    assert rc == 0, out
    assert_increasing_to_100(seen(out), TOTAL, out)
    assert "(100.0%), 8/8 files" in out
    assert "\x1b" not in out and "\r" not in out
    lines = [ln for ln in out.splitlines() if "progress: bundle_import" in ln]
    assert all(ln.startswith("progress: bundle_import") for ln in lines), lines


def test_with_the_callback_not_enabled_no_progress_line(tmp_path, media):
    play, dest = playbook(tmp_path, media)
    rc, out = run_in_pipe(play, env(tmp_path, False))
    assert rc == 0, out
    assert "progress: " not in out and "\x1b" not in out
    assert "Bundle verified (8 files" in out and (dest / "models" / "m" / "shard-7.safetensors").stat().st_size == SHARD
    # the module still wrote its progress file, in the one format, finished
    doc = json.loads((tmp_path / "dest.progress").read_text())
    assert (doc["format"], doc["state"], doc["bytes_done"], doc["bytes_total"]) == ("llmops.onprem.progress/v1", "done",
                                                                                    TOTAL, TOTAL)


LOOP_PLAY = """
- name: Verify the media twice, each run with its own progress file (as the checkpoints role's loop does)
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    work: %(work)s
    runs: [{name: first}, {name: second}]
  tasks:
    - name: Verify the media
      llmops.onprem.bundle_verify:
        src: %(media)s
        public_key: %(pub)s
        progress_file: "{{ work }}/{{ run.name }}.progress.json"
      loop: "{{ runs }}"
      loop_control:
        loop_var: run
        label: "{{ run.name }}"
"""


def test_a_loop_shows_each_items_transfer_from_its_templated_path(tmp_path, media):
    play = tmp_path / "loop.yml"
    play.write_text(LOOP_PLAY % dict(work=tmp_path, media=media["media"], pub=media["pub"]))
    rc, out = run_in_pipe(str(play), env(tmp_path, True))
    assert rc == 0, out
    finals = [ln for ln in out.splitlines() if ln.startswith("progress: bundle_verify: 192.0 MiB / 192.0 MiB (100.0%)")]
    assert len(finals) == 2, out  # one per item: the path was templated with each item's loop variable
    assert sorted(os.listdir(str(tmp_path))) == ["first.progress.json", "loop.yml", "second.progress.json"]
