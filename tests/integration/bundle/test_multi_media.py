"""One bundle spread over several media (issue 19 item 10), through the real modules and role run by ansible:

- bundle_pack with medium_size writes three folders as three media, each with whole segments and the same
  signed tables; bundle_verify imports medium 1 (media_missing [2, 3], imported false), then 2, then 3
  (imported true), and the tree is the one a single-medium import gives;
- a medium of another bundle is refused while an import is under way, naming why, with nothing written; a
  flipped byte on medium 2 is refused naming the file and the segment;
- the bundle_import role asks for the next medium on a terminal (a pty here: the test swaps the medium at
  the mount point and types its number), and stops with the missing media named where no one can answer
  (no terminal) or bundle_import_media_prompt is false."""
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import lab_bundle
from ansible_collections.llmops.onprem.plugins.modules import bundle_seal

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.dirname(sys.executable)
SEG, MEDIUM = "256KiB", "600KiB"  # two segments per medium, with the tables


def sealed(tmp, name="bundle", seed=0):
    tmp.mkdir(parents=True, exist_ok=True)
    priv, pub = tmp.parent / "k.pem", tmp.parent / "k.pub.pem"
    if not priv.exists():
        k = ed25519.Ed25519PrivateKey.generate()
        priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    root = tmp / name
    files = {"models/m/shard-0.safetensors": 700 * 1024 + 7, "models/m/shard-1.safetensors": 500 * 1024,
             "models/m/shard-2.safetensors": 90 * 1024 + seed, "models/m/config.json": 20}
    for rel, size in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(size))
    bundle_seal.run(dict(path=str(root), private_key=str(priv), spec={"name": name}, versions={}, images=[]), False)
    return dict(root=str(root), priv=str(priv), pub=str(pub))


def env():
    return dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), NO_COLOR="1", ANSIBLE_NOCOLOR="1",
                ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", PATH=BIN + os.pathsep + os.environ["PATH"])


def module(name, **args):
    """Run llmops.onprem.<name> on localhost through ansible; (rc, result dict)."""
    return lab_bundle.ansible_module(name, args, env())


def pack_media(tmp, b, prefix="medium"):
    """Every medium of the pack into tmp/<prefix>-N; the list of folders."""
    out, n, media = [], 1, 1
    while n <= media:
        d = tmp / ("%s-%d" % (prefix, n))
        rc, res = module("bundle_pack", src=b["root"], dest=str(d), private_key=b["priv"], segment_size=SEG, medium_size=MEDIUM, medium=n)
        assert rc == 0 and res["changed"] is True and res["medium"] == n, res
        media = res["media"]
        out.append(d)
        n += 1
    return out


def tree(d):
    out = {}
    for base, dummy, files in os.walk(str(d)):
        for f in files:
            p = os.path.join(base, f)
            if not p.endswith("state.json"):  # inodes and times
                with open(p, "rb") as fh:
                    out[os.path.relpath(p, str(d))] = fh.read()
    return out


def test_three_media_imported_one_after_the_other(tmp_path):
    b = sealed(tmp_path / "src")
    media = pack_media(tmp_path, b)
    assert len(media) == 3
    for n, d in enumerate(media, 1):
        names = sorted(os.listdir(str(d)))
        assert names == ["bundle-%04d.tar" % (2 * n - 1), "bundle-%04d.tar" % (2 * n), "manifest.json", "manifest.json.sig",
                         "segments.json", "segments.json.sig"], names
        assert (d / "segments.json").read_bytes() == (media[0] / "segments.json").read_bytes()
    # Each medium verifies by itself, with the module and with playbooks/bundle_verify.yml.
    rc, res = module("bundle_verify", src=str(media[1]), public_key=b["pub"])
    assert rc == 0 and res["media_here"] == [2] and res["media_missing"] == [1, 3] and res["imported"] is False, res
    p = subprocess.run([os.path.join(BIN, "ansible-playbook"), os.path.join(REPO, "playbooks", "bundle_verify.yml"), "-e",
                        "llmops_bundle=%s" % media[1], "-e", "bundle_import_public_key=%s" % b["pub"]],
                       check=False, capture_output=True, text=True, env=env(), cwd=REPO, timeout=300)
    flat = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 0 and "in segments, spread over 3 media - medium 2 of 3 verified (every segment there, every part against the " \
        "signed sha256); media 1, 3 hold the rest of the bundle: verify them too." in flat, flat[-3000:]

    dest = tmp_path / "import"
    rc, res = module("bundle_verify", src=str(media[0]), public_key=b["pub"], dest=str(dest))
    assert rc == 0 and res["imported"] is False and res["media_missing"] == [2, 3] and res["changed"] is True, res
    assert res["media_message"] == ("medium 1 of 3 imported into %s; insert medium 2 of 3 at %s and run the import again "
                                    "(still needed: media 2, 3)" % (dest, media[0])), res
    rc, res = module("bundle_verify", src=str(media[1]), public_key=b["pub"], dest=str(dest))
    assert rc == 0 and res["imported"] is False and res["media_missing"] == [3], res
    rc, res = module("bundle_verify", src=str(media[2]), public_key=b["pub"], dest=str(dest))
    assert rc == 0 and res["imported"] is True and res["media_missing"] == [] and res["media_message"] == "all 3 media imported", res

    one = tmp_path / "one"
    rc, res = module("bundle_pack", src=b["root"], dest=str(one), private_key=b["priv"], segment_size=SEG)
    assert rc == 0 and res["media"] == 1, res
    rc, res = module("bundle_verify", src=str(one), public_key=b["pub"], dest=str(tmp_path / "import-one"))
    assert rc == 0 and res["imported"] is True, res
    assert tree(dest) == tree(tmp_path / "import-one")
    for rel in ("models/m/shard-0.safetensors", "models/m/shard-1.safetensors"):
        with open(os.path.join(b["root"], rel), "rb") as a:
            assert (dest / rel).read_bytes() == a.read()


def test_a_medium_of_another_bundle_and_a_damaged_medium_are_refused(tmp_path):
    b = sealed(tmp_path / "src")
    media = pack_media(tmp_path, b)
    other = sealed(tmp_path / "src", name="other", seed=1)
    other_media = pack_media(tmp_path, other, prefix="other")
    dest = tmp_path / "import"
    rc, res = module("bundle_verify", src=str(media[0]), public_key=b["pub"], dest=str(dest))
    assert rc == 0 and res["media_missing"] == [2, 3], res
    before = tree(dest)

    rc, res = module("bundle_verify", src=str(other_media[1]), public_key=b["pub"], dest=str(dest))
    assert rc != 0
    assert res["msg"].startswith("%s is in the middle of importing bundle %s" % (dest, json.loads(
        (dest / ".llmops-import" / "media.json").read_text())["manifest_sha256"][:16])), res["msg"]
    assert "still needing medium 2, 3); %s holds medium 2 of another bundle" % other_media[1] in res["msg"], res["msg"]
    assert res["msg"].endswith("Nothing was written"), res["msg"]
    assert tree(dest) == before

    seg = media[1] / "bundle-0003.tar"
    with open(str(seg), "r+b") as f:
        f.seek(4096)
        c = f.read(1)
        f.seek(4096)
        f.write(bytes([c[0] ^ 0x01]))
    rc, res = module("bundle_verify", src=str(media[1]), public_key=b["pub"], dest=str(dest))
    assert rc != 0
    # bundle-0003.tar (medium 2) starts with the last part of shard-0, whose first two parts came from medium 1.
    assert res["msg"].startswith("sha256 mismatch for models/m/shard-0.safetensors.part-0003-of-0003 in segment bundle-0003.tar: "
                                 "segments.json says "), res["msg"]
    assert not (dest / ".llmops-import" / "manifest.json").exists() and not (dest / "manifest.json").exists()
    assert not (dest / "models/m/shard-0.safetensors").exists() and not (dest / "models/m/shard-0.safetensors.partial").exists()


PLAY = """
- name: Import a bundle with the role site.yml uses
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    llmops_bundle: %(src)s
  roles:
    - role: llmops.onprem.bundle_import
      bundle_import_public_key: %(pub)s
      bundle_import_dest: %(dest)s
      bundle_import_media_prompt: %(prompt)s
"""


def playbook_args(tmp_path, b, prompt=True):
    inventory = tmp_path / "site"
    inventory.mkdir(exist_ok=True)
    (inventory / "hosts.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    path = tmp_path / "play.yml"
    path.write_text(PLAY % dict(src=tmp_path / "stick", pub=b["pub"], dest=inventory / ".bundle", prompt=prompt))
    return [os.path.join(BIN, "ansible-playbook"), "-i", str(inventory / "hosts.yml"), str(path)], inventory / ".bundle"


def insert(tmp_path, medium):
    """Swap the medium mounted at tmp/stick for tmp/medium-N (the one there goes back to its folder)."""
    stick = tmp_path / "stick"
    if stick.exists():
        was = json.loads((tmp_path / "stick.json").read_text())
        os.rename(str(stick), str(tmp_path / ("medium-%d" % was)))
    os.rename(str(tmp_path / ("medium-%d" % medium)), str(stick))
    (tmp_path / "stick.json").write_text(json.dumps(medium))


def test_the_role_asks_for_each_next_medium_on_a_terminal(tmp_path):
    b = sealed(tmp_path / "src")
    pack_media(tmp_path, b)
    insert(tmp_path, 1)
    args, dest = playbook_args(tmp_path, b)
    pid, fd = pty.fork()
    if pid == 0:  # the child: ansible-playbook with the pty as its controlling terminal
        os.chdir(str(tmp_path))
        os.execve(args[0], args, env())
    out = b""

    def read_some(limit):
        """What the playbook prints within limit seconds (less when it prints sooner)."""
        nonlocal out
        ready, dummy, dummy2 = select.select([fd], [], [], limit)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            assert chunk, "ansible-playbook ended early: %s" % out.decode(errors="replace")[-3000:]
            out += chunk

    def wait_for(text, limit=300):
        end = time.monotonic() + limit
        while text.encode() not in out:
            left = end - time.monotonic()
            assert left > 0, "no %r within %ds: %s" % (text, limit, out.decode(errors="replace")[-3000:])
            read_some(left)

    def answer(n, limit=120):
        """Type n and Enter. ansible.builtin.pause prints its prompt, then switches the terminal to raw mode and discards
        what was typed so far (tcflush), so an answer typed right after the prompt may be lost: type it again until the
        next task shows that it was read."""
        marker = b"Refuse a missing or wrong answer"
        seen, end = out.count(marker), time.monotonic() + limit
        while out.count(marker) == seen:
            assert time.monotonic() < end, "the answer %d was never read: %s" % (n, out.decode(errors="replace")[-3000:])
            os.write(fd, b"%d\r" % n)
            again = time.monotonic() + 3  # the terminal echoes what is typed: wait for the task, not for any output
            while out.count(marker) == seen and time.monotonic() < again:
                read_some(max(0, again - time.monotonic()))

    status = None
    try:
        for n in (2, 3):
            wait_for("type %d and press Enter" % n)
            insert(tmp_path, n)
            answer(n)
        wait_for("PLAY RECAP")
        while True:  # the rest of the output, up to the end
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        dummy, status = os.waitpid(pid, 0)
    finally:
        if status is None:  # a failed wait: the playbook may still be waiting for an answer
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    text = " ".join(out.decode(errors="replace").split())
    assert os.waitstatus_to_exitcode(status) == 0, text[-4000:]
    assert "medium 1 of 3 imported into %s; insert medium 2 of 3 at %s and run the import again (still needed: media 2, 3)" \
        % (dest, tmp_path / "stick") in text, text[-4000:]
    assert "Spread over 3 media: all 3 media imported" in text, text[-4000:]
    assert (dest / ".llmops-import" / "manifest.json").exists()
    state = json.loads((tmp_path / "site" / ".private" / "site-state.json").read_text())
    assert state["bundle_import"]["dir"] == str(dest)


def test_the_role_stops_naming_the_missing_media_without_a_terminal(tmp_path):
    b = sealed(tmp_path / "src")
    pack_media(tmp_path, b)
    insert(tmp_path, 1)
    for prompt, text in ((True, "bundle_import: no medium was confirmed (the answer was ''; a run without a terminal gets no answer). "
                                "Still needed: medium 2, 3 of 3. Mount medium 2 at %s and run the same command again"),
                         (False, "bundle_import: medium 1 of 3 imported into %s; insert medium 2 of 3 at %s and run the import again "
                                 "(still needed: media 2, 3). bundle_import_media_prompt is false, so the run stops here")):
        args, dest = playbook_args(tmp_path, b, prompt=prompt)
        p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, env=env(), cwd=str(tmp_path),
                           timeout=300)
        flat = " ".join((p.stdout + p.stderr).split())
        want = text % (tmp_path / "stick") if prompt else text % (dest, tmp_path / "stick")
        assert p.returncode != 0 and want in flat, flat[-4000:]
        assert not (dest / ".llmops-import" / "manifest.json").exists()
    # The next medium mounted, the same command goes on where it stopped.
    insert(tmp_path, 2)
    p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, env=env(), cwd=str(tmp_path), timeout=300)
    flat = " ".join((p.stdout + p.stderr).split())
    assert p.returncode != 0 and "medium 2 of 3 imported into %s; insert medium 3 of 3" % dest in flat, flat[-4000:]
    insert(tmp_path, 3)
    p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, env=env(), cwd=str(tmp_path), timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert (dest / ".llmops-import" / "manifest.json").exists()
    shutil.rmtree(str(tmp_path / "stick"))


def test_medium_1_holds_the_controller_bootstrap_llmops_verify_extracts(tmp_path):
    b = sealed(tmp_path / "src")
    root = tmp_path / "src" / "bundle"
    (root / "bootstrap.sh").write_text("#!/bin/sh\necho boot\n")
    (root / "python").mkdir()
    (root / "python" / "requirements.lock").write_text("x==1 --hash=sha256:%s\n" % ("0" * 64))
    (root / "collections").mkdir()
    (root / "collections" / "llmops-onprem.tar.gz").write_bytes(os.urandom(300 * 1024))
    bundle_seal.run(dict(path=str(root), private_key=b["priv"], spec={"name": "bundle"}, versions={}, images=[]), False)
    media = pack_media(tmp_path, b)
    assert len(media) == 4
    verify = os.path.join(REPO, "bundle", "llmops-verify.sh")
    p = subprocess.run(["sh", verify, "--key", b["pub"], "--bundle", str(media[0]), "--extract", str(tmp_path / "boot")],
                       capture_output=True, text=True, check=False, timeout=120)
    assert p.returncode == 0 and "verified and extracted the controller bootstrap (3 files)" in p.stderr, p.stderr
    assert (tmp_path / "boot" / "collections" / "llmops-onprem.tar.gz").read_bytes() == \
        (root / "collections" / "llmops-onprem.tar.gz").read_bytes()
    p = subprocess.run(["sh", verify, "--key", b["pub"], "--bundle", str(media[1])], capture_output=True, text=True, check=False, timeout=120)
    assert p.returncode == 1 and "The bundle is spread over several media and the controller bootstrap is on medium 1: run this " \
        "with medium 1 mounted." in p.stderr, p.stderr
