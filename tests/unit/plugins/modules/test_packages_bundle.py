"""packages_bundle with everything real except podman: apt-ftparchive indexes real .deb files
(made with dpkg-deb), gpg makes and uses a real Ed25519 key, gpgv checks the signatures. The fake
podman answers like `apt-get install -s` and, when the pool is mounted, writes the closure's debs."""
import os
import shutil
import subprocess

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils import _debrepo
from ansible_collections.llmops.onprem.plugins.modules import packages_bundle as m


def make_deb(workdir, name, version):
    root = os.path.join(workdir, "%s-%s" % (name, version))
    os.makedirs(os.path.join(root, "DEBIAN"))
    with open(os.path.join(root, "DEBIAN", "control"), "w") as f:
        f.write("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: t <t@example.invalid>\n"
                "Description: test package\n" % (name, version))
    out = os.path.join(workdir, _debrepo.deb_filename(name, version, "all"))
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, out], check=True, capture_output=True)
    return out


class FakePodman(object):
    def __init__(self, workdir, closure):
        self.workdir = workdir
        self.closure = closure  # [(name, version)]
        self.unknown = None
        self.calls = []

    def __call__(self, argv, cwd=None, binary=False):
        if argv[0] != "podman":
            r = subprocess.run(argv, cwd=cwd, capture_output=True, check=False)
            dec = (lambda b: b) if binary else (lambda b: b.decode("utf-8", "replace"))
            return r.returncode, dec(r.stdout), dec(r.stderr)
        self.calls.append(argv)
        if self.unknown:
            return 4, "", "apt cannot resolve the package list:\nE: Unable to locate package %s\n" % self.unknown
        if "-v" in argv:
            pool = argv[argv.index("-v") + 1].split(":")[0]
            for name, version in self.closure:
                target = os.path.join(pool, _debrepo.deb_filename(name, version, "all"))
                if not os.path.exists(target):
                    shutil.copy(make_deb(self.workdir, name, version), target)
        out = "".join("Inst %s (%s Debian:12/stable [all])\n" % c for c in self.closure)
        return 0, out, ""


@pytest.fixture
def env(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    fake = FakePodman(str(work), [("llmops-a", "1:1.0-1"), ("llmops-b", "2.0")])
    params = dict(distro="debian-12", image="img:1", names=["llmops-a"], dest=str(tmp_path / "bundle" / "packages" / "debian-12"),
                  key_dir=str(tmp_path / "private" / "apt"), podman="podman", network=None)
    yield fake, params
    _debrepo.stop_agent(fake, os.path.join(params["key_dir"], "gnupg"))


def snapshot(dest):
    out = {}
    for base, _dirs, files in os.walk(dest):
        for f in files:
            path = os.path.join(base, f)
            out[os.path.relpath(path, dest)] = open(path, "rb").read()
    return out


def test_build_signs_a_repository_that_gpgv_accepts_and_a_rebuild_changes_nothing(env):
    fake, p = env
    first = m.run_module(fake, p, check_mode=False)
    dest = p["dest"]
    assert first["changed"] and first["key_generated"]
    assert first["downloaded"] == ["llmops-a_1%3a1.0-1_all.deb", "llmops-b_2.0_all.deb"]
    assert set(first["written"]) == {"llmops-archive-keyring.gpg", "Packages", "Release", "packages.lock", "InRelease", "Release.gpg"}
    assert open(os.path.join(dest, "packages.lock")).read() == "llmops-a=1:1.0-1\nllmops-b=2.0\n"
    assert "Filename: pool/llmops-a_1%3a1.0-1_all.deb" in open(os.path.join(dest, "Packages")).read()
    keyring = os.path.join(dest, "llmops-archive-keyring.gpg")
    assert subprocess.run(["gpgv", "--keyring", keyring, os.path.join(dest, "InRelease")], capture_output=True, check=False).returncode == 0
    assert subprocess.run(["gpgv", "--keyring", keyring, os.path.join(dest, "Release.gpg"), os.path.join(dest, "Release")],
                          capture_output=True, check=False).returncode == 0
    shown = subprocess.run(["gpg", "--homedir", os.path.join(p["key_dir"], "gnupg"), "--show-keys", "--with-colons", keyring],
                           capture_output=True, text=True, check=False).stdout
    pub = [line.split(":") for line in shown.splitlines() if line.startswith("pub:")]
    assert pub[0][3] == "22" and pub[0][16] == "ed25519"  # OpenPGP algorithm 22: EdDSA
    assert oct(os.stat(os.path.join(p["key_dir"], "gnupg")).st_mode & 0o777) == "0o700"

    before = snapshot(dest)
    assert m.run_module(fake, p, check_mode=True)["changed"] is False
    second = m.run_module(fake, p, check_mode=False)
    assert (second["changed"], second["downloaded"], second["removed"], second["written"]) == (False, [], [], [])
    assert snapshot(dest) == before


def test_check_mode_predicts_a_changed_closure_and_the_real_run_matches(env):
    fake, p = env
    m.run_module(fake, p, check_mode=False)
    before = snapshot(p["dest"])
    fake.closure = [("llmops-a", "1:1.0-1"), ("llmops-c", "3.0")]
    predicted = m.run_module(fake, p, check_mode=True)
    assert snapshot(p["dest"]) == before
    real = m.run_module(fake, p, check_mode=False)
    assert predicted["changed"] and real["changed"]
    assert predicted["downloaded"] == real["downloaded"] == ["llmops-c_3.0_all.deb"]
    assert predicted["removed"] == real["removed"] == ["llmops-b_2.0_all.deb"]
    assert predicted["diff"]["after"] == real["diff"]["after"] == "llmops-a=1:1.0-1\nllmops-c=3.0\n"
    assert sorted(os.listdir(os.path.join(p["dest"], "pool"))) == ["llmops-a_1%3a1.0-1_all.deb", "llmops-c_3.0_all.deb"]
    assert "InRelease" in real["written"]


def test_an_unknown_package_is_refused_and_leaves_nothing(env, tmp_path):
    fake, p = env
    fake.unknown = "llmops-nope"
    with pytest.raises(_debrepo.PackagesError) as e:
        m.run_module(fake, dict(p, names=["llmops-nope"]), check_mode=False)
    assert str(e.value).startswith("resolving the closure of llmops-nope in a container of img:1 failed (rc=4): "
                                   "apt cannot resolve the package list:\nE: Unable to locate package llmops-nope")
    assert not os.path.exists(str(tmp_path / "bundle"))
    assert not os.path.exists(p["key_dir"])


def test_bad_input_is_refused_before_podman_runs(env):
    fake, p = env
    with pytest.raises(_debrepo.PackagesError) as e:
        m.run_module(fake, dict(p, distro="bookworm", names=[]), check_mode=False)
    assert str(e.value) == ("distro 'bookworm' is not of the form debian-12 / ubuntu-24.04; "
                            "names is empty: list the OS packages the site installs")
    assert fake.calls == []


# plan(): pure, from a state dict shaped like gather()'s.
LOCK_AB = b"llmops-a=1:1.0-1\nllmops-b=2.0\n"
CLOSURE_AB = _debrepo.parse_closure("Inst llmops-a (1:1.0-1 Debian:12/stable [all])\nInst llmops-b (2.0 Debian:12/stable [all])\n")
P = dict(distro="debian-12", image="img:1", names=["llmops-a"])


def state(**changes):
    index = b"Package: llmops-a\n\n"
    files = {"llmops-archive-keyring.gpg": b"KEY", "Packages": index, "packages.lock": LOCK_AB,
             "Release": m.release_bytes("debian-12", index, None, 0)}
    out = dict(key_fingerprint="F" * 40, public_key=b"KEY", present=[c["filename"] for c in CLOSURE_AB],
               closure=CLOSURE_AB, now=0, files=files, index=index, signatures_valid=True)
    out["files"] = dict(files, **changes.pop("files", {}))
    out.update(changes)
    return out


def test_plan_of_a_current_repository_does_nothing():
    todo = m.plan(P, state(now=10 ** 9))  # a later clock keeps the Release date of an unchanged index
    assert (todo["changed"], todo["downloaded"], todo["removed"], todo["written"], todo["generate_key"]) == \
        (False, [], [], [], False)
    assert todo["lock"] == todo["before_lock"] == LOCK_AB.decode()


def test_plan_of_a_first_build():
    empty = dict((name, None) for name in ("llmops-archive-keyring.gpg", "Packages", "Release", "packages.lock"))
    todo = m.plan(P, state(key_fingerprint=None, public_key=None, present=[], index=b"", files=empty,
                           signatures_valid=False))
    assert todo["changed"] and todo["generate_key"] and todo["key_fingerprint"] is None
    assert todo["downloaded"] == ["llmops-a_1%3a1.0-1_all.deb", "llmops-b_2.0_all.deb"] and todo["removed"] == []
    assert todo["written"] == ["llmops-archive-keyring.gpg", "Packages", "Release", "packages.lock", "InRelease",
                               "Release.gpg"]
    assert todo["before_lock"] == ""


@pytest.mark.parametrize("changes, written", [
    (dict(files={"llmops-archive-keyring.gpg": b"OTHER"}), ["llmops-archive-keyring.gpg", "InRelease", "Release.gpg"]),
    (dict(files={"Packages": b"stale"}), ["Packages"]),
    (dict(files={"Release": b"Date: x\n"}), ["Release", "InRelease", "Release.gpg"]),
    (dict(files={"packages.lock": b"hand-edited\n"}), ["packages.lock"]),
    (dict(signatures_valid=False), ["InRelease", "Release.gpg"]),
    (dict(present=["llmops-a_1%3a1.0-1_all.deb", "old_1_all.deb"]),
     ["Packages", "Release", "InRelease", "Release.gpg"]),
])
def test_plan_rewrites_only_what_differs(changes, written):
    todo = m.plan(P, state(**changes))
    assert todo["changed"] and todo["written"] == written


def test_plan_refuses_an_empty_closure():
    with pytest.raises(_debrepo.PackagesError) as e:
        m.plan(P, state(closure=[]))
    assert str(e.value) == ("the image img:1 already has llmops-a and all their dependencies installed: the closure is "
                            "empty, so the repository would be empty; use an image as minimal as the site's hosts")


def test_check_mode_reports_what_the_real_run_writes(env):
    fake, p = env
    predicted = m.run_module(fake, p, check_mode=True)
    assert not os.path.exists(p["dest"]) and not os.path.exists(p["key_dir"])
    real = m.run_module(fake, p, check_mode=False)
    for key in ("changed", "packages", "downloaded", "removed", "written", "key_generated", "diff"):
        assert predicted[key] == real[key], key
    assert predicted["key_fingerprint"] is None and real["key_fingerprint"]


def test_apply_refuses_a_closure_that_moved_between_plan_and_fetch(env, tmp_path):
    fake, p = env
    todo = m.plan(p, m.gather(fake, p))
    fake.closure = [("llmops-a", "1:1.0-2"), ("llmops-b", "2.0")]  # the mirror moved on meanwhile
    with pytest.raises(_debrepo.PackagesError) as e:
        m.apply(fake, p, todo)
    assert str(e.value).startswith("the closure of llmops-a changed while it was fetched (the image's apt sources moved "
                                   "on): planned ['llmops-a=1:1.0-1', 'llmops-b=2.0'], fetched ['llmops-a=1:1.0-2', ")
    assert not os.path.exists(p["key_dir"])
    assert not os.path.exists(os.path.join(p["dest"], "packages.lock"))
