"""capacity_plan: bytes needed versus free per destination, a table with aligned columns, one problem per full filesystem."""
import re

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.capacity_plan import FilterModule, capacity_plan

MiB = 1024 * 1024


def dest(host, what, path, needed, free=None, device=1, mount="/", used=0, fix=""):
    space = None if free is None else {"path": path, "free": free, "device": device, "mount": mount, "used": used}
    return {"host": host, "destination": what, "path": path, "needed": needed, "space": space, "fix": fix}


def test_enough_room_is_no_problem_and_every_row_is_listed():
    plan = capacity_plan([dest("infra-1", "package repository", "/var/lib/llmops/apt", 10 * MiB, 100 * MiB),
                          dest("controller", "bundle import", "/srv/inv/.bundle", 50 * MiB, 60 * MiB, device=9)])
    assert plan["problems"] == []
    assert [(r["host"], r["status"], r["needed"], r["free"]) for r in plan["rows"]] == [
        ("infra-1", "ok", 10 * MiB, 100 * MiB), ("controller", "ok", 50 * MiB, 60 * MiB)]


def test_a_destination_too_small_names_host_destination_needed_free_and_fix():
    plan = capacity_plan([dest("infra-1", "package repository", "/var/lib/llmops/apt", 5 * MiB, 2 * MiB, mount="/var/lib/llmops",
                               fix="set packages_repo_dir to a path on a larger filesystem")])
    assert plan["rows"][0]["status"] == "TOO SMALL"
    assert plan["problems"] == [
        "capacity: infra-1: package repository at /var/lib/llmops/apt needs 5.0 MiB (5242880 bytes), the filesystem "
        "/var/lib/llmops holding it has 2.0 MiB (2097152 bytes) free. Fix: free 3.0 MiB on /var/lib/llmops, mount a larger "
        "filesystem at /var/lib/llmops/apt, or set packages_repo_dir to a path on a larger filesystem, then run again."]


def test_destinations_on_one_filesystem_are_added_up():
    # Each fits alone; together they do not.
    plan = capacity_plan([dest("infra-1", "package repository", "/var/lib/llmops/apt", 6 * MiB, 10 * MiB, fix="set packages_repo_dir"),
                          dest("infra-1", "registry storage", "/var/lib/docker-registry", 6 * MiB, 10 * MiB, fix="set registry_storage_path"),
                          dest("infra-2", "registry storage", "/var/lib/docker-registry", 6 * MiB, 10 * MiB)])
    assert [r["status"] for r in plan["rows"]] == ["TOO SMALL", "TOO SMALL", "ok"]
    (problem,) = plan["problems"]
    assert problem.startswith("capacity: infra-1: package repository at /var/lib/llmops/apt (6.0 MiB), registry storage at "
                              "/var/lib/docker-registry (6.0 MiB) share the filesystem / and together need 12.0 MiB")
    assert "it has 10.0 MiB (10485760 bytes) free. Fix: free 2.0 MiB on /, or move one of them to another filesystem " \
           "(set packages_repo_dir; set registry_storage_path), then run again." in problem


def test_what_the_path_already_holds_counts_on_a_rerun():
    plan = capacity_plan([dest("infra-1", "registry storage", "/var/lib/docker-registry", 8 * MiB, 1 * MiB, used=8 * MiB)])
    assert plan["problems"] == [] and plan["rows"][0]["needed"] == 0


def test_headroom_is_added():
    plan = capacity_plan([dest("h", "x", "/x", 100, 104)], 0.05)
    assert plan["rows"][0]["needed"] == 105 and len(plan["problems"]) == 1


def test_unknown_free_space_is_listed_not_a_problem():
    d = dest("minio-1", "object store (external)", "bucket checkpoints", 7 * MiB)
    d["unknown"] = "the free space of an S3 endpoint cannot be read"
    plan = capacity_plan([d])
    assert plan["problems"] == []
    assert plan["rows"] == [{"host": "minio-1", "destination": "object store (external)", "path": "bucket checkpoints",
                             "filesystem": "-", "needed": 7 * MiB, "free": None, "status": "unknown",
                             "unknown": "the free space of an S3 endpoint cannot be read"}]


def test_the_table_has_aligned_columns():
    plan = capacity_plan([dest("infra-1", "package repository", "/var/lib/llmops/apt", 5 * MiB, 2 * MiB),
                          dest("controller", "bundle import", "/srv/site/.bundle", 50 * MiB, 60 * 1024 * MiB, device=2),
                          dest("minio-1", "object store (external)", "bucket checkpoints", 7 * MiB)])
    t = plan["table"]
    assert re.match(r"^host +destination +path +filesystem +needed +free +status$", t[0])
    assert t[1] == "infra-1     package repository       /var/lib/llmops/apt  /           5.0 MiB   2.0 MiB   TOO SMALL"
    assert t[2] == "controller  bundle import            /srv/site/.bundle    /           50.0 MiB  60.0 GiB  ok"
    assert t[3] == "minio-1     object store (external)  bucket checkpoints   -           7.0 MiB   unknown   unknown"
    assert len({t[0].index("needed"), t[1].index("5.0"), t[2].index("50.0")}) == 1


@pytest.mark.parametrize("bad, text", [
    ("not a list", "expected a list of destinations"),
    ([{"host": "h"}], "each destination needs host, destination, path and needed"),
    ([{"host": "h", "destination": "d", "path": "/p", "needed": "lots"}], "needed of d on h must be a number of bytes"),
    ([{"host": "h", "destination": "d", "path": "/p", "needed": -1}], "must not be negative"),
])
def test_bad_input_is_refused_with_its_reason(bad, text):
    with pytest.raises(AnsibleFilterError, match=re.escape(text)):
        capacity_plan(bad)


def test_registered():
    assert FilterModule().filters()["capacity_plan"] is capacity_plan
