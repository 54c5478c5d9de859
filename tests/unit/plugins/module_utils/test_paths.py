"""The one rule for manifest paths (issue 14 item 10), shared by the bundle import and model-pull."""
import pytest

from ansible_collections.llmops.onprem.plugins.module_utils._paths import path_problem, paths_problem


@pytest.mark.parametrize("path", ["a", "models/llama-3/model-00001-of-00002.safetensors", "images/blobs/sha256/" + "0" * 64,
                                  ".gitattributes", "a/.cache/b", "a..b", "...x"])
def test_plain_relative_paths_pass(path):
    assert path_problem(path) is None


@pytest.mark.parametrize("path, why", [
    ("", "is empty or not a string"),
    (None, "is empty or not a string"),
    ("/etc/passwd", "is absolute (manifest paths are relative to the bundle)"),
    ("../x", "has a '..' component (only plain names may appear)"),
    ("a/../../x", "has a '..' component (only plain names may appear)"),
    ("a/./b", "has a '.' component (only plain names may appear)"),
    (".", "has a '.' component (only plain names may appear)"),
    ("a//b", "has an empty component (a doubled or trailing '/')"),
    ("a/", "has an empty component (a doubled or trailing '/')"),
    ("a\\..\\b", "holds a backslash (paths use '/')"),
    ("a\x00b", "holds a NUL byte"),
    ("a/" + "x" * 256, "has a component longer than 255 bytes"),
    ("a/" * 2048 + "b", "is longer than 4095 bytes"),
])
def test_each_bad_path_has_its_reason(path, why):
    assert path_problem(path) == why


def test_lists():
    assert paths_problem(["a/b", "a/c", "b"]) is None
    assert paths_problem(["a/b", "../x"]) == "'../x' has a '..' component (only plain names may appear)"
    assert paths_problem(["a/b", "a/b"]) == "'a/b' is listed twice"
    assert paths_problem(["a/b/c", "a/b"]) == "'a/b' is listed as a file and also as a folder of 'a/b/c'"
