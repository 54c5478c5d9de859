"""model-pull's cache directories when pulls of one model start together on a node: another pull creating a
directory between this one's look and its mkdir is not an error (test_concurrent_pulls_download_once in
tests/integration/checkpoints failed on it: "cannot create ...: [Errno 17] File exists"), and a link created
there in that moment is still refused."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def model_pull():
    spec = importlib.util.spec_from_file_location("model_pull_cache_dirs", os.path.join(ROOT, "serving", "model-pull", "model_pull.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def racing_mkdir(mod, monkeypatch, make):
    """os.mkdir as it behaves when another pull wins the race for the model's directory ("demo"): the path
    appears (made by ``make``), then EEXIST. Other directories are made as usual."""
    real = os.mkdir

    def mkdir(path, mode=0o777):
        if os.path.basename(path) != "demo":
            return real(path, mode)
        make(path, real)
        raise FileExistsError(17, "File exists", path)
    monkeypatch.setattr(mod.os, "mkdir", mkdir)


def test_a_directory_another_pull_just_made_is_taken(tmp_path, monkeypatch):
    mod = model_pull()
    racing_mkdir(mod, monkeypatch, lambda path, real: real(path, 0o755))
    root = tmp_path / "cache"
    mod.cache_dirs(str(root), str(root / "demo"), str(root / "demo" / ("a" * 64)))
    assert (root / "demo" / ("a" * 64)).is_dir()


def test_a_link_made_in_that_moment_is_refused(tmp_path, monkeypatch):
    mod = model_pull()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    racing_mkdir(mod, monkeypatch, lambda path, real: os.symlink(str(elsewhere), path))
    root = tmp_path / "cache"
    with pytest.raises(mod.PullError, match="the node cache holds a symbolic link at .*demo .*where the model's directory should be"):
        mod.cache_dirs(str(root), str(root / "demo"), str(root / "demo" / ("a" * 64)))
    assert os.listdir(str(elsewhere)) == []
