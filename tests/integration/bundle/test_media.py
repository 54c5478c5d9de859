"""Media a site actually has, on real file systems, through the real modules run by ansible:

- a 2 MiB tmpfs too small for the pack: bundle_pack refuses before writing a byte, naming the
  medium, the bytes needed and the bytes free; a pack that fits is written and verifies;
- an exFAT image (mkfs.exfat) attached to a loop device and mounted with exfat-fuse, as a 64 GB
  exFAT stick would be: the segments are packed onto it, bundle_verify imports from it;
- playbooks/bundle_verify.yml against written media: passes for good media, fails naming the file
  and segment for a damaged one, and says which variables are missing.

The mounts need root (CI runs as root); the exFAT test needs exfatprogs and exfat-fuse
(tests/tools/setup.sh installs them) and is skipped only when mount.exfat-fuse is missing."""
import json
import os
import re
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import lab_bundle
from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.join(REPO, ".venv", "bin")


def sealed(tmp_path, sizes):
    """A sealed bundle with one model file per size (random bytes), and its keys."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    k = ed25519.Ed25519PrivateKey.generate()
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    root = tmp_path / "bundle"
    for i, size in enumerate(sizes):
        p = root / "models" / "m" / ("shard-%d.safetensors" % i)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    (root / "models" / "m" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    bundle_seal.run(dict(path=str(root), private_key=str(priv), spec={"name": "media"}, versions={}, images=[]), False)
    return dict(root=str(root), priv=str(priv), pub=str(pub))


def env():
    return dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), NO_COLOR="1", PATH=BIN + os.pathsep + os.environ["PATH"])


def module(name, **args):
    """Run llmops.onprem.<name> on localhost through ansible; (rc, result dict)."""
    return lab_bundle.ansible_module(name, args, env())


def need_root():
    if os.geteuid() != 0:
        pytest.fail("this test mounts a file system and needs root (CI runs as root)")


@pytest.fixture
def tmpfs(tmp_path):
    need_root()
    mnt = tmp_path / "stick"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_pack_refuses_a_medium_too_small_before_writing(tmp_path, tmpfs):
    b = sealed(tmp_path, [1024 * 1024, 1024 * 1024 + 1, 512 * 1024])
    st = os.statvfs(str(tmpfs))
    free = st.f_bavail * st.f_frsize
    rc, res = module("bundle_pack", src=b["root"], dest=str(tmpfs), private_key=b["priv"], segment_size="1MiB")
    assert rc != 0
    msg = res["msg"]
    assert msg.startswith("not enough space in %s: the pack needs " % tmpfs), msg
    need = int(msg.split(" bytes) more")[0].rsplit("(", 1)[1])
    assert need > 2.5 * 1024 * 1024  # the three files and their tar headers
    assert msg.endswith("more, the file system has 2.0 MiB (%d bytes) free. Use a larger medium or free space on it; "
                        "nothing was written" % free), msg
    assert os.listdir(str(tmpfs)) == []
    # Into a folder on the medium: the folder is not even created.
    rc, res = module("bundle_pack", src=b["root"], dest=str(tmpfs / "site-a"), private_key=b["priv"], segment_size="1MiB")
    assert rc != 0 and res["msg"].startswith("not enough space in %s: " % (tmpfs / "site-a"))
    assert os.listdir(str(tmpfs)) == []
    # Check mode predicts the same refusal.
    p = subprocess.run([os.path.join(BIN, "ansible"), "localhost", "-C", "-m", "llmops.onprem.bundle_pack", "-a",
                        json.dumps(dict(src=b["root"], dest=str(tmpfs), private_key=b["priv"], segment_size="1MiB")), "-o"],
                       check=False, capture_output=True, text=True, env=env(), cwd=REPO, timeout=300)
    assert p.returncode != 0 and "not enough space in %s" % tmpfs in p.stdout, p.stdout + p.stderr
    assert os.listdir(str(tmpfs)) == []


def test_pack_that_fits_is_written_read_back_and_verifies(tmp_path, tmpfs):
    b = sealed(tmp_path, [700 * 1024, 600 * 1024])
    rc, res = module("bundle_pack", src=b["root"], dest=str(tmpfs), private_key=b["priv"], segment_size="512KiB")
    assert rc == 0 and res["changed"] is True, res
    assert len(res["segments"]) == 3 and res["split_files"] == ["models/m/shard-0.safetensors", "models/m/shard-1.safetensors"]
    rc, res = module("bundle_pack", src=b["root"], dest=str(tmpfs), private_key=b["priv"], segment_size="512KiB")
    assert rc == 0 and res["changed"] is False, res
    rc, res = module("bundle_verify", src=str(tmpfs), public_key=b["pub"])
    assert rc == 0 and res["segmented"] is True and res["files_total"] == 3, res


@pytest.fixture
def exfat(tmp_path):
    """A 64 MiB exFAT image on a loop device, mounted with exfat-fuse (as root, exfat-fuse wants a block
    device: a plain image file is refused with 'Block device required')."""
    need_root()
    for tool in ("mount.exfat-fuse", "mkfs.exfat"):
        if not shutil.which(tool):
            if tool == "mount.exfat-fuse":
                pytest.skip("mount.exfat-fuse is missing: install exfat-fuse and exfatprogs (tests/tools/setup.sh does)")
            pytest.fail("%s is missing: install exfatprogs (tests/tools/setup.sh does)" % tool)
    img, mnt = tmp_path / "stick.img", tmp_path / "stick"
    mnt.mkdir()
    with open(str(img), "wb") as f:
        f.truncate(64 * 1024 * 1024)
    subprocess.run(["mkfs.exfat", "-L", "LLMOPS", str(img)], check=True, capture_output=True)
    attach = subprocess.run(["losetup", "--find", "--show", str(img)], check=False, capture_output=True, text=True)
    if attach.returncode != 0:
        # A container without loop devices (no /dev/loop-control): the exFAT driver needs a block device.
        pytest.skip("no loop device to attach the exFAT image to: %s" % attach.stderr.strip())
    loop = attach.stdout.strip()
    try:
        subprocess.run(["mount.exfat-fuse", loop, str(mnt)], check=True, capture_output=True)
        try:
            fstype = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", str(mnt)], check=True, capture_output=True, text=True).stdout
            assert fstype.strip() == "fuseblk", fstype
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)


def test_pack_onto_exfat_and_import_from_it(tmp_path, exfat):
    b = sealed(tmp_path, [3 * 1024 * 1024 + 7, 2 * 1024 * 1024, 4096])
    media = exfat / "site-a"
    rc, res = module("bundle_pack", src=b["root"], dest=str(media), private_key=b["priv"], segment_size="2MiB")
    assert rc == 0 and res["changed"] is True, res
    assert len(res["segments"]) == 3
    assert sorted(os.listdir(str(media))) == ["bundle-0001.tar", "bundle-0002.tar", "bundle-0003.tar", "manifest.json",
                                              "manifest.json.sig", "segments.json", "segments.json.sig"]
    rc, res = module("bundle_pack", src=b["root"], dest=str(media), private_key=b["priv"], segment_size="2MiB")
    assert rc == 0 and res["changed"] is False, res
    dest = tmp_path / "import"
    rc, res = module("bundle_verify", src=str(media), public_key=b["pub"], dest=str(dest))
    assert rc == 0 and res["imported"] is True and res["segmented"] is True and res["files_copied"] == 4, res
    for rel in ("models/m/shard-0.safetensors", "models/m/shard-1.safetensors", "models/m/shard-2.safetensors",
                "models/m/config.json"):
        with open(os.path.join(b["root"], rel), "rb") as a, open(str(dest / rel), "rb") as c:
            assert a.read() == c.read(), rel
    # exFAT's own limit: a medium too small is refused there too, before a byte is written.
    big = sealed(tmp_path / "big", [70 * 1024 * 1024])
    rc, res = module("bundle_pack", src=big["root"], dest=str(exfat / "site-b"), private_key=big["priv"], segment_size="16MiB")
    assert rc != 0 and res["msg"].startswith("not enough space in %s: the pack needs 70.1 MiB" % (exfat / "site-b")), res
    assert not (exfat / "site-b").exists()


def playbook(*extra):
    p = subprocess.run([os.path.join(BIN, "ansible-playbook"), os.path.join(REPO, "playbooks", "bundle_verify.yml")] + list(extra),
                       check=False, capture_output=True, text=True, env=env(), cwd=REPO, timeout=300)
    return p.returncode, p.stdout + p.stderr


def test_bundle_verify_playbook(tmp_path):
    b = sealed(tmp_path, [600 * 1024, 100 * 1024])
    media = tmp_path / "media"
    bundle_pack.run(dict(src=b["root"], dest=str(media), private_key=b["priv"], segment_size="256KiB", read_back=True,
                         progress_file=None), False)
    before = {n: os.stat(str(media / n)).st_mtime_ns for n in os.listdir(str(media))}
    rc, out = playbook("-e", "llmops_bundle=%s" % media, "-e", "bundle_import_public_key=%s" % b["pub"])
    assert rc == 0, out
    line = [x.strip() for x in out.splitlines() if "msg: 'bundle_verify: " in x]
    assert len(line) == 1, out
    assert line[0].startswith("msg: 'bundle_verify: %s verified - bundle " % media) and ", 3 files, 700.04 KB in segments, " \
        "every byte matches the signed sha256.'" in line[0], line[0]
    assert re.search(r"localhost\s+:\s+ok=3\s+changed=0\s+unreachable=0\s+failed=0\s", out), out
    # --check verifies every byte as a real run does (there is nothing to write)
    rc, checked = playbook("--check", "-e", "llmops_bundle=%s" % media, "-e", "bundle_import_public_key=%s" % b["pub"])
    assert rc == 0 and "every byte matches the signed sha256." in checked, checked
    assert {n: os.stat(str(media / n)).st_mtime_ns for n in os.listdir(str(media))} == before  # read-only

    # One flipped byte in the second segment: the run fails, naming the file and the segment.
    seg = media / "bundle-0002.tar"
    with open(str(seg), "r+b") as f:
        f.seek(4096)
        c = f.read(1)
        f.seek(4096)
        f.write(bytes([c[0] ^ 0x01]))
    rc, out = playbook("-e", "llmops_bundle=%s" % media, "-e", "bundle_import_public_key=%s" % b["pub"])
    assert rc != 0, out
    assert "sha256 mismatch for models/m/shard-0.safetensors.part-0002-of-0003 in segment bundle-0002.tar" in out, out
    assert "msg: 'bundle_verify: " not in out

    # Missing variables: said before anything is read.
    rc, out = playbook("-e", "llmops_bundle=%s" % media)
    assert rc != 0 and "bundle_verify: set llmops_bundle (the mounted medium or the bundle directory) and " \
                       "bundle_import_public_key" in out, out
