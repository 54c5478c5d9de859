"""checkpoint_copy's pure planner, checkpoint_sync's re-upload and copy planners, checkpoint_prune's plan: no files, no server."""
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


def test_sync_copies_from_the_first_earlier_prefix_holding_the_same_path_size_and_sha256():
    todo = dict(upload=list(MANIFEST["files"]), manifest=True, extra=[], delete=[], abort=[])
    older = ("m/" + "1" * 64, {"config.json": {"size": 10, "sha256": A}, "sub/model.safetensors": {"size": 20, "sha256": B}})
    newer = ("m/" + "2" * 64, {"config.json": {"size": 10, "sha256": A},
                               # another sha256 (the shard that changed), or a size without sha256 metadata: uploaded
                               "sub/model.safetensors": {"size": 20, "sha256": ""}})
    copies, rest = checkpoint_sync.plan_copies(todo, [newer, older])
    assert {k: [f["path"] for f in v] for k, v in copies.items()} == {newer[0]: ["config.json"],
                                                                      older[0]: ["sub/model.safetensors"]}
    assert rest["upload"] == [] and rest["manifest"] is True
    copies, rest = checkpoint_sync.plan_copies(todo, [newer])
    assert list(copies) == [newer[0]] and [f["path"] for f in rest["upload"]] == ["sub/model.safetensors"]
    assert checkpoint_sync.plan_copies(todo, []) == ({}, todo)


def test_prune_keeps_the_current_the_referenced_and_what_the_collection_does_not_name():
    from ansible_collections.llmops.onprem.plugins.modules import checkpoint_prune
    old = dict(name="m", bucket="ckpt", prefix="m/" + A, digest=A)
    cur = dict(name="m", bucket="ckpt", prefix="m/" + B, digest=B)
    busy = dict(name="n", bucket="ckpt", prefix="n/" + "c" * 64, digest="c" * 64)
    odd = dict(name="o", bucket="ckpt", prefix="o", digest=A)
    go, kept = checkpoint_prune.plan([old, cur, busy, odd, old], ["ckpt/m/" + B], {"c" * 64: "ns/pod"})
    assert go == [old]
    assert [(k["name"], k["why"].split(" (")[0]) for k in kept] == [
        ("m", "the current bundle names it"), ("n", "a pod references it: ns/pod"), ("o", "not a prefix this collection names")]
    assert checkpoint_prune.why_kept(dict(old, prefix="m/" + B), [], {}).startswith("not a prefix")  # digest elsewhere
