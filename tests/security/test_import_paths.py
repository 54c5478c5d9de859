"""Issue 14 item 10: one path rule for every mode. A signed manifest whose paths leave the
destination, spell a path two ways, or list one twice is refused before anything is read, for a
bundle directory and for segmented media alike."""
import pytest

from conftest import snapshot
from importcase import Case, import_
from ansible_collections.llmops.onprem.plugins.module_utils._paths import path_problem, paths_problem

TAIL = (". Every path must be relative, with plain names only (no '..', '.', empty or absolute parts), and listed once. "
        "Refusing the bundle; nothing was installed")

CASES = [
    (["../x"], "'../x' has a '..' component (only plain names may appear)"),
    (["charts/../../x"], "'charts/../../x' has a '..' component (only plain names may appear)"),
    (["/etc/cron.d/x"], "'/etc/cron.d/x' is absolute (manifest paths are relative to the bundle)"),
    (["charts/./x"], "'charts/./x' has a '.' component (only plain names may appear)"),
    (["charts//x"], "'charts//x' has an empty component (a doubled or trailing '/')"),
    (["charts/x", "charts/x"], "'charts/x' is listed twice"),
    (["charts/x", "charts/x/y"], "'charts/x' is listed as a file and also as a folder of 'charts/x/y'"),
    ([".llmops-import/state.json"], "'.llmops-import/state.json' is a name the import keeps for itself"),
]


@pytest.mark.parametrize("segmented", [False, True], ids=["dir", "media"])
@pytest.mark.parametrize("paths, why", CASES, ids=[c[1].split(" ", 1)[1][:24] for c in CASES])
def test_bad_manifest_path_is_refused(tmp_path, segmented, paths, why):
    case = Case(tmp_path)
    if segmented:
        # real segments, each member named as the manifest names it (duplicates get different content and hashes)
        src = case.media_with_members([(p, b"payload %d" % i) for i, p in enumerate(paths)])
    else:
        src = tmp_path / "bundle"
        case.signed_manifest(src, [{"path": p, "size": 1, "sha256": "%064x" % i} for i, p in enumerate(paths)])
    before = snapshot(str(tmp_path))
    res, err = import_(src, case.pub, case.dest)
    assert err == "the signed manifest.json is unusable: the path " + why + TAIL
    assert snapshot(str(tmp_path)) == before and not case.dest.exists()


def test_the_rule_itself():
    assert path_problem("models/llama/config.json") is None
    assert path_problem("") == "is empty or not a string"
    assert path_problem("a\\b") == "holds a backslash (paths use '/')"
    assert path_problem("a/") == "has an empty component (a doubled or trailing '/')"
    assert path_problem("a\x00") == "holds a NUL byte"
    assert path_problem("x" * 256) == "has a component longer than 255 bytes"
    assert paths_problem(["a/b", "a/c", "b"]) is None
