"""serving/images/pins.py: the serving images' Debian pins come from the apt repository, not from a hand. Against a
fake of what apt answers (its real output shapes, taken from Debian 12): a pin behind bookworm-security is reported
and updated; a closure list gains what its roots now need and loses what only a left-out package needed; comments
stay; a hand-chosen list keeps its packages; a list that cannot be read, or a package with no candidate, is refused by
name and nothing is written."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load():
    spec = importlib.util.spec_from_file_location("image_pins", os.path.join(ROOT, "serving", "images", "pins.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pins = load()

POLICY = """zlib1g:
  Installed: 1:1.2.13.dfsg-1
  Candidate: 1:1.2.13.dfsg-1+deb12u1
  Version table:
     1:1.2.13.dfsg-1+deb12u1 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
 *** 1:1.2.13.dfsg-1 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
libc6:
  Installed: 2.36-9+deb12u14
  Candidate: 2.36-9+deb12u14
  Version table:
 *** 2.36-9+deb12u14 500
libfoo1:i386:
  Installed: (none)
  Candidate: (none)
  Version table:
"""

SIMULATE = """NOTE: This is only a simulation!
Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.12/stable [amd64])
Inst libc6 (2.36-9+deb12u14 Debian-Security:12/stable-security [amd64])
Inst zlib1g [1:1.2.13.dfsg-1] (1:1.2.13.dfsg-1+deb12u1 Debian-Security:12/stable-security [amd64])
Inst libzstd1 (1.5.4+dfsg2-5+deb12u1 Debian:12.12/stable [amd64])
Inst dpkg (1.21.23 Debian:12.12/stable [amd64])
Inst python3.11-minimal (3.11.2-6+deb12u9 Debian-Security:12/stable-security [amd64])
Conf libc6 (2.36-9+deb12u14 Debian-Security:12/stable-security [amd64])
"""

DEPENDS = """python3.11-minimal
  PreDepends: libc6
  Depends: zlib1g
 |Depends: <mime-support>
    media-types
  Depends: dpkg
libc6
  Depends: libgcc-s1
  Depends: gcc-12-base
zlib1g
  Depends: libc6
dpkg
  PreDepends: libzstd1
  PreDepends: libc6
libzstd1
  Depends: libc6
gcc-12-base
<mime-support>
"""


class FakeApt(object):
    def __init__(self, candidates, resolved=None, depends=None):
        self.c, self.r, self.d, self.calls = candidates, resolved or {}, depends or {}, []

    def candidates(self, names):
        self.calls.append(("candidates", sorted(names)))
        return dict((n, self.c.get(n)) for n in names)

    def resolve(self, roots):
        self.calls.append(("resolve", list(roots)))
        return self.r

    def depends(self, roots):
        return self.d


RUNTIME = """# the runtime
# closure-of: python3.11-minimal
# left-out: dpkg
libc6=2.36-9+deb12u14
libmd0=1.0.4-2
python3.11-minimal=3.11.2-6+deb12u9
zlib1g=1:1.2.13.dfsg-1
# trailing comment
"""


def repo():
    resolved = pins.parse_simulate(SIMULATE)
    return FakeApt(dict(resolved), resolved, pins.parse_depends(DEPENDS))


def test_apt_answers_are_read_as_apt_writes_them():
    assert pins.parse_policy(POLICY) == {"zlib1g": "1:1.2.13.dfsg-1+deb12u1", "libc6": "2.36-9+deb12u14", "libfoo1": None}
    assert pins.parse_simulate(SIMULATE) == {
        "gcc-12-base": "12.2.0-14+deb12u1", "libc6": "2.36-9+deb12u14", "zlib1g": "1:1.2.13.dfsg-1+deb12u1",
        "libzstd1": "1.5.4+dfsg2-5+deb12u1", "dpkg": "1.21.23", "python3.11-minimal": "3.11.2-6+deb12u9"}
    deps = pins.parse_depends(DEPENDS)
    assert deps["python3.11-minimal"] == {"libc6", "zlib1g", "mime-support", "media-types", "dpkg"}
    assert deps["dpkg"] == {"libzstd1", "libc6"} and deps["mime-support"] == set()


def test_a_closure_list_is_brought_to_the_repository_and_what_only_a_left_out_package_needs_stays_out():
    result = pins.plan(RUNTIME, repo(), "runtime")
    assert result["behind"] == [("zlib1g", "1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1")]
    assert result["missing"] == [("gcc-12-base", "12.2.0-14+deb12u1")]  # libc6 needs it now
    assert result["unneeded"] == ["libmd0"]
    assert "libzstd1" not in dict(result["pins"]) and "dpkg" not in dict(result["pins"])  # dpkg's, left out
    assert pins.describe("runtime", result) == [
        "runtime: zlib1g pinned 1:1.2.13.dfsg-1, the repository has 1:1.2.13.dfsg-1+deb12u1",
        "runtime: gcc-12-base=12.2.0-14+deb12u1 is now in the closure and not pinned",
        "runtime: libmd0 is pinned but no longer in the closure"]
    text = pins.render_list(RUNTIME, result["pins"])
    assert text == """# the runtime
# closure-of: python3.11-minimal
# left-out: dpkg
libc6=2.36-9+deb12u14
python3.11-minimal=3.11.2-6+deb12u9
zlib1g=1:1.2.13.dfsg-1+deb12u1
gcc-12-base=12.2.0-14+deb12u1
# trailing comment
"""
    assert pins.plan(text, repo(), "runtime")["pins"] == result["pins"]
    assert not any(pins.plan(text, repo(), "runtime")[k] for k in ("behind", "missing", "unneeded", "gone"))


def test_a_hand_chosen_list_keeps_its_packages_in_its_order_and_only_gets_versions():
    text = "# chosen by hand\nzlib1g=1:1.2.13.dfsg-1\nlibc6=2.36-9+deb12u14\n"
    apt = repo()
    result = pins.plan(text, apt, "libs")
    assert [c[0] for c in apt.calls] == ["candidates"]  # no closure asked of apt
    assert result["missing"] == [] and result["unneeded"] == []
    assert pins.render_list(text, result["pins"]) == "# chosen by hand\nzlib1g=1:1.2.13.dfsg-1+deb12u1\nlibc6=2.36-9+deb12u14\n"


def test_check_exits_1_and_update_rewrites_the_file_then_check_is_clean(tmp_path, capsys):
    path = tmp_path / "python-runtime.packages"
    path.write_text(RUNTIME)
    assert pins.main(["check", str(path)], apt=repo()) == 1
    assert path.read_text() == RUNTIME  # check writes nothing
    assert "python-runtime.packages: zlib1g pinned 1:1.2.13.dfsg-1" in capsys.readouterr().out
    assert pins.main(["update", str(path)], apt=repo()) == 0
    assert "updated (1 behind, 1 added, 1 dropped)" in capsys.readouterr().out
    assert pins.main(["check", str(path)], apt=repo()) == 0
    assert "every pin is the repository's current version" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["python-runtime.packages"]


@pytest.mark.parametrize("text, message", [
    ("libc6\n", "list line 1: 'libc6' is not a pin (package=version)"),
    ("libc6=1\nlibc6=2\n", "list line 2: libc6 is pinned twice"),
    ("# left-out: dpkg\nlibc6=1\n", "list: left-out without closure-of"),
    ("# closure-of: Bad_Name\n", "list line 1: closure-of needs package names, got 'Bad_Name'"),
    ("libc6=2.36 9\n", "list line 1: 'libc6=2.36 9' is not a pin (package=version)"),
])
def test_a_list_that_is_not_one_is_refused_by_line(text, message):
    with pytest.raises(pins.PinError) as e:
        pins.parse_list(text)
    assert str(e.value) == message


def test_a_package_without_a_candidate_is_named_and_update_writes_nothing(tmp_path, capsys):
    path = tmp_path / "vllm-cpu.packages"
    text = "libc6=2.36-9+deb12u14\nlibgone1=1.0\n"
    path.write_text(text)
    apt = FakeApt({"libc6": "2.36-9+deb12u14"})
    assert pins.main(["update", str(path)], apt=apt) == 1
    assert path.read_text() == text and sorted(os.listdir(tmp_path)) == ["vllm-cpu.packages"]
    assert ("vllm-cpu.packages: libgone1 has no candidate in the repository (is the source configured?)"
            in capsys.readouterr().out)


def test_a_root_apt_cannot_resolve_and_an_unreadable_list_exit_2_with_the_reason(tmp_path, capsys):
    path = tmp_path / "python-runtime.packages"
    path.write_text("# closure-of: python3.12-minimal\nlibc6=1\n")
    assert pins.main(["check", str(path)], apt=repo()) == 2
    assert "pins.py: python-runtime.packages: apt resolves no python3.12-minimal (closure-of)" in capsys.readouterr().err
    assert pins.main(["check", str(tmp_path / "missing.packages")], apt=repo()) == 2
    assert "missing.packages" in capsys.readouterr().err


def test_the_lists_of_the_repository_parse_and_say_how_they_are_made():
    for name in pins.LISTS:
        with open(os.path.join(ROOT, "serving", "images", name), encoding="utf-8") as f:
            text = f.read()
        found, roots, left_out = pins.parse_list(text, name)
        assert found and "pins.py update" in text
        if name == "python-runtime.packages":
            assert roots == ["python3.11-minimal", "libpython3.11-stdlib"] and left_out == ["dpkg", "perl-base", "tar"]
