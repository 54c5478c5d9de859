"""Issue 14 item 2: an older, validly signed bundle must not roll the site back. The destination
records what it imported (outside the medium); an older bundle is refused unless the inventory
allows a downgrade."""
from conftest import snapshot
from importcase import Case, import_


def test_older_bundle_is_refused_unless_a_downgrade_is_allowed(tmp_path):
    case = Case(tmp_path)
    old_root = tmp_path / "old"
    case.root = old_root
    case.seal(files={"charts/serving/Chart.yaml": b"version: 1\n", "charts/serving/old.yaml": b"gone later\n"},
              created="2026-11-01T00:00:00Z")
    new_root = tmp_path / "new"
    case.root = new_root
    case.seal(files={"charts/serving/Chart.yaml": b"version: 2\n"}, created="2026-12-01T00:00:00Z")
    res, err = import_(new_root, case.pub, case.dest)
    assert err is None and res["imported"]
    new_id, old_id = res["manifest_sha256"], import_(old_root, case.pub)[0]["manifest_sha256"]
    before = snapshot(str(tmp_path))

    res, err = import_(old_root, case.pub, case.dest)
    assert err == (
        "downgrade refused: %s last imported bundle %s, created 2026-12-01T00:00:00Z; this bundle %s was created "
        "2026-11-01T00:00:00Z, which is older. Importing it would put back files the newer bundle replaced (a rollback). "
        "If going back is intended, set bundle_import_allow_downgrade: true in the inventory (module option allow_downgrade) "
        "and run again. Nothing was installed" % (case.dest, new_id[:16], old_id[:16]))
    assert snapshot(str(tmp_path)) == before  # nothing changed, in the destination or anywhere else
    assert (case.dest / "charts/serving/Chart.yaml").read_bytes() == b"version: 2\n"

    res, err = import_(old_root, case.pub, case.dest, allow_downgrade=True)
    assert err is None and res["imported"] and res["previous"]["manifest_sha256"] == new_id
    assert (case.dest / "charts/serving/Chart.yaml").read_bytes() == b"version: 1\n"
    # the record moved to the older bundle: importing the newer one again is an upgrade
    res, err = import_(new_root, case.pub, case.dest)
    assert err is None and res["imported"] and res["files_removed"] == ["charts/serving/old.yaml"]


def test_same_bundle_again_and_a_newer_one_are_accepted(tmp_path):
    case = Case(tmp_path)
    case.seal(created="2026-11-01T00:00:00Z")
    assert import_(case.root, case.pub, case.dest)[1] is None
    res, err = import_(case.root, case.pub, case.dest)
    assert err is None and res["changed"] is False
    case.resign(case.root, created="2026-11-02T00:00:00Z")
    res, err = import_(case.root, case.pub, case.dest)
    assert err is None and res["imported"] and res["files_copied"] == 0
