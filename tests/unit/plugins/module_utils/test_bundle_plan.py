"""plan_import (module_utils/_bundle.py): the pure plan of a bundle import from the signed listing and the
destination's facts (Importer.gather()); check mode reports it, Importer.apply() carries it out."""
import pytest

from ansible_collections.llmops.onprem.plugins.module_utils._bundle import BundleError, plan_import

A, B, C = "images/a.tar", "models/b/config.json", "charts/c.tgz"
FILES = {A: dict(path=A, size=100, sha256="a" * 64), B: dict(path=B, size=10, sha256="b" * 64),
         C: dict(path=C, size=1, sha256="c" * 64)}
REC = dict(sha256="x", stat=[1, 2, 3])


def facts(**changes):
    out = dict(dest="/srv/llmops/bundle", present=[], was_imported=False, in_place={}, free=1 << 30,
               held_candidates=None, last_import=None)
    out.update(changes)
    return out


def test_a_first_import_copies_everything():
    todo = plan_import(FILES, FILES, None, facts())
    assert not todo["noop"] and todo["copy"] == sorted(FILES) and todo["copy_bytes"] == 111
    assert (todo["skip"], todo["move"], todo["held_in_place"], todo["remove"]) == ([], [], [], [])


def test_an_imported_bundle_with_every_file_in_place_is_a_noop():
    in_place = dict((p, REC) for p in FILES)
    todo = plan_import(FILES, FILES, None, facts(was_imported=True, in_place=in_place, free=0,
                                                 present=sorted(FILES) + ["old.txt"]))
    assert todo["noop"] and todo["skip"] == sorted(FILES) and todo["copy"] == []


def test_an_upgrade_copies_what_changed_and_removes_what_left():
    present = [A, B, "manifest.json", "manifest.json.sig", ".llmops-import/state.json", "images/old.tar"]
    todo = plan_import(FILES, FILES, None, facts(was_imported=True, in_place={A: REC}, present=present))
    assert not todo["noop"] and todo["skip"] == [A] and todo["copy"] == [C, B] and todo["copy_bytes"] == 11
    assert todo["remove"] == ["images/old.tar"]


def test_a_delta_takes_held_files_from_the_destination():
    delta = dict(carried=[C])
    cands = {A: [A], B: ["models/old/config.json", B]}
    todo = plan_import(FILES, {C: FILES[C]}, delta, facts(held_candidates=cands, in_place={A: REC, C: REC}))
    assert todo["held"] == {A: FILES[A], B: FILES[B]} and todo["sources"] == cands
    assert todo["held_in_place"] == [A] and todo["move"] == [B] and todo["move_bytes"] == 10
    assert todo["skip"] == [C] and todo["copy"] == []  # a held file is hashed again, never trusted by record


def test_a_delta_whose_held_files_the_site_lacks_is_refused():
    delta = dict(carried=[C], base=dict(bundles=[dict(id="f" * 64, name="site-2026-11", created="2026-11-01T00:00:00Z")]))
    with pytest.raises(BundleError) as e:
        plan_import(FILES, {C: FILES[C]}, delta, facts(held_candidates={A: [A], B: []}, last_import="e" * 64))
    assert str(e.value) == (
        "delta refused: this delta carries 1 of the bundle's 3 files and takes the other 2 from what the site holds; its "
        "base is bundle ffffffffffffffff (site-2026-11, created 2026-11-01T00:00:00Z). /srv/llmops/bundle (last import: "
        "bundle eeeeeeeeeeeeeeee) lacks 1 of them: %s (sha256 %s, 10 B). Import the full bundle, or write this site's "
        "receipt (playbooks/receipt.yml) and build a delta from it. Nothing was written" % (B, "b" * 64))


def test_not_enough_space_is_refused_with_the_figures():
    with pytest.raises(BundleError) as e:
        plan_import(FILES, FILES, None, facts(free=110))
    assert str(e.value) == ("not enough space in /srv/llmops/bundle: the import needs 111 B (111 bytes), the file system "
                            "has 110 B free. Free space or choose another destination; nothing was installed")
