"""path_space: the filesystem a path is (or will be) on, its free bytes, and what the path already holds."""
import os

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.llmops.onprem.plugins.modules import path_space


def test_an_existing_directory_and_what_it_holds(tmp_path):
    d = tmp_path / "repo"
    (d / "pool").mkdir(parents=True)
    (d / "pool" / "a.deb").write_bytes(b"x" * 1000)
    (d / "Packages").write_bytes(b"y" * 24)
    os.symlink("/etc/passwd", str(d / "link"))  # a link counts nothing and is not followed
    out = path_space.space(str(d), measure_used=True)
    vfs = os.statvfs(str(tmp_path))
    assert out["exists"] and out["checked"] == str(d) and out["used"] == 1024
    assert out["device"] == os.stat(str(tmp_path)).st_dev
    assert abs(out["free"] - vfs.f_bavail * vfs.f_frsize) < 64 * 1024 * 1024 and out["size"] == vfs.f_blocks * vfs.f_frsize


def test_a_path_not_there_yet_is_read_on_its_nearest_existing_parent(tmp_path):
    out = path_space.space(str(tmp_path / "var" / "lib" / "llmops" / "apt"), measure_used=True)
    assert not out["exists"] and out["checked"] == str(tmp_path) and out["used"] == 0
    assert out["mount"] == path_space.mount_point(str(tmp_path))


def test_without_measure_used_nothing_is_walked(tmp_path):
    assert path_space.space(str(tmp_path))["used"] is None


def test_the_mount_point_of_root_is_root():
    assert path_space.mount_point("/") == "/" and path_space.nearest_existing("/no/such/dir/at/all") == "/"


def test_module_refuses_a_relative_path_and_changes_nothing(tmp_path, capsys):
    with patch_module_args({"paths": ["relative/dir"]}):
        with pytest.raises(SystemExit):
            path_space.main()
    out = capsys.readouterr().out
    assert "path_space: paths must be absolute, got relative/dir" in out


def test_module_reports_every_path_in_order_unchanged(tmp_path, capsys):
    with patch_module_args({"paths": [str(tmp_path), str(tmp_path / "new")], "_ansible_check_mode": True}):
        with pytest.raises(SystemExit):
            path_space.main()
    out = capsys.readouterr().out
    assert '"changed": false' in out and out.index('"exists": true') < out.index('"exists": false')
    assert sorted(os.listdir(str(tmp_path))) == []
