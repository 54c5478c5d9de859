"""checkpoint_copy's pure planner and checkpoint_sync's re-upload planner: no files, no server."""
from ansible_collections.llmops.onprem.plugins.modules import checkpoint_copy, checkpoint_sync

A = "a" * 64
B = "b" * 64
MANIFEST = {"files": [{"path": "config.json", "size": 10, "sha256": A},
                      {"path": "sub/model.safetensors", "size": 20, "sha256": B}]}


def test_copy_plan_of_an_empty_destination_copies_everything():
    assert checkpoint_copy.plan(MANIFEST, {}, lambda p: None) == (["config.json", "sub/model.safetensors"], [])


def test_copy_plan_keeps_equal_files_and_removes_dot_files_links_and_strays():
    state = {"config.json": ("file", 10), "sub": ("dir", 0), "sub/model.safetensors": ("file", 20),
             ".gitattributes": ("file", 5), ".cache": ("dir", 0), ".cache/x": ("file", 1),
             "old": ("dir", 0), "old/y": ("file", 1), "link.json": ("link", 3)}
    copy, remove = checkpoint_copy.plan(MANIFEST, state, {"config.json": A, "sub/model.safetensors": B}.get)
    assert copy == [] and remove == [".cache", ".gitattributes", "link.json", "old"]


def test_copy_plan_replaces_a_changed_file_and_a_link_where_a_file_or_directory_belongs():
    state = {"config.json": ("link", 10), "sub": ("link", 0)}
    copy, remove = checkpoint_copy.plan(MANIFEST, state, lambda p: A)
    assert copy == ["config.json", "sub/model.safetensors"] and remove == ["config.json", "sub"]
    copy, remove = checkpoint_copy.plan(MANIFEST, {"config.json": ("file", 10)}, lambda p: B)
    assert copy == ["config.json", "sub/model.safetensors"] and remove == []


def test_sync_reupload_adds_corrupt_files_in_path_order():
    todo = dict(upload=[MANIFEST["files"][1]], manifest=False, extra=[], delete=[], abort=[])
    assert checkpoint_sync.reupload(todo, MANIFEST, []) is todo
    again = checkpoint_sync.reupload(todo, MANIFEST, ["config.json"])
    assert [f["path"] for f in again["upload"]] == ["config.json", "sub/model.safetensors"]
    assert again["manifest"] is False
