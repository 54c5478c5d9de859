"""Issue 14 item 4: links planted in the destination (or at the progress file) are never followed.
A link anywhere in the destination is refused before anything is written; the progress file, which
lives beside the destination, is replaced rather than written through."""
import os

import pytest

from conftest import snapshot
from importcase import Case, import_
from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B


def refusal(path):
    return ("%s in the destination is a symbolic link or another special file: the import writes only real files and folders "
            "and never follows a link. Remove it (rm %s) and run the import again; nothing was written through it" % (path, path))


@pytest.fixture(params=["dir", "media"])
def case(request, tmp_path):
    c = Case(tmp_path)
    c.seal()
    c.src = c.root if request.param == "dir" else c.pack()
    return c


@pytest.mark.parametrize("planted, target", [
    ("charts/serving/Chart.yaml.partial", "outside/victim"),   # the temporary file of a file the import writes
    ("charts", "outside"),                                     # a folder of the bundle
    ("manifest.json", "outside/victim"),                       # the copy of the signed manifest
    (".llmops-import/state.journal", "outside/victim"),        # the resume journal
    (".llmops-import", "outside"),                             # the import's own folder
])
def test_link_planted_in_the_destination_is_refused(case, tmp_path, planted, target):
    link = case.dest / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(str(tmp_path / target), str(link))
    outside = snapshot(str(case.outside))
    everything = snapshot(str(tmp_path))
    res, err = import_(case.src, case.pub, case.dest)
    assert err == refusal(link)
    assert snapshot(str(case.outside)) == outside
    assert snapshot(str(tmp_path)) == everything  # refused before anything was written, anywhere
    assert (case.outside / "victim").read_bytes() == b"the site's own file\n"


def test_link_in_a_later_import_is_refused_too(case):
    """A destination that already holds the bundle: the link is found before the no-op answer."""
    assert import_(case.src, case.pub, case.dest)[1] is None
    os.unlink(str(case.dest / "bootstrap.sh"))
    os.symlink(str(case.outside / "victim"), str(case.dest / "bootstrap.sh"))
    res, err = import_(case.src, case.pub, case.dest)
    assert err == refusal(case.dest / "bootstrap.sh")
    assert (case.outside / "victim").read_bytes() == b"the site's own file\n"


def test_writes_go_through_folder_descriptors_without_following(tmp_path):
    """The no-follow writes themselves (what stops a link planted between the check and the write)."""
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    os.symlink(str(outside), str(dest / "charts"))
    d = B.DestDir(str(dest), create=True)
    try:
        with pytest.raises(B.BundleError) as e:
            d.create("charts/serving/Chart.yaml")
        assert str(e.value) == refusal(dest / "charts")
        os.symlink(str(outside / "victim"), str(dest / "x.partial"))
        f, commit, discard = d.create("x")  # the planted temporary name is unlinked, then created exclusively
        with f:
            f.write(b"new")
        commit()
    finally:
        d.close()
    assert os.listdir(str(outside)) == [] and (dest / "x").read_bytes() == b"new" and not os.path.islink(str(dest / "x"))


@pytest.mark.parametrize("planted", ["progress", "progress.tmp"])
def test_linked_progress_file_is_replaced_not_followed(case, planted):
    progress = case.tmp / "progress"
    os.symlink(str(case.outside / "victim"), str(case.tmp / planted))
    outside = snapshot(str(case.outside))
    res, err = import_(case.src, case.pub, case.dest, progress_file=str(progress))
    assert err is None and res["imported"]
    assert snapshot(str(case.outside)) == outside  # mode 0600 and content kept
    assert not os.path.islink(str(progress)) and b'"phase": "done"' in progress.read_bytes()
