# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One rule for the relative paths a signed manifest may list (the bundle import, every mode,
and the model-pull): a path names a file strictly inside the destination, in one spelling only.

Private to this collection: the API may change without notice.
"""

from __future__ import annotations

# Linux limits (NAME_MAX, PATH_MAX); a path beyond them could not be written anyway.
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4095


def path_problem(path):
    """Why `path` is not an acceptable manifest path, or None when it is. Acceptable: a non-empty
    relative POSIX path of non-empty components, none of them '.' or '..', no NUL or backslash."""
    if not isinstance(path, str) or not path:
        return "is empty or not a string"
    if "\x00" in path:
        return "holds a NUL byte"
    if "\\" in path:
        return "holds a backslash (paths use '/')"
    if path.startswith("/"):
        return "is absolute (manifest paths are relative to the bundle)"
    try:
        raw = path.encode("utf-8")
    except UnicodeError:
        return "is not valid UTF-8"
    if len(raw) > MAX_PATH_BYTES:
        return "is longer than %d bytes" % MAX_PATH_BYTES
    for part in path.split("/"):
        if part == "":
            return "has an empty component (a doubled or trailing '/')"
        if part in (".", ".."):
            return "has a %r component (only plain names may appear)" % part
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            return "has a component longer than %d bytes" % MAX_COMPONENT_BYTES
    return None


def paths_problem(paths):
    """The first problem with a list of manifest paths, as 'PATH: reason', or None: each path
    must pass path_problem, appear once, and not be both a file and a folder of another path."""
    seen = set()
    for p in paths:
        why = path_problem(p)
        if why:
            return "%r %s" % (p, why)
        if p in seen:
            return "%r is listed twice" % p
        seen.add(p)
    for p in sorted(seen):
        parts = p.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d in seen:
                return "%r is listed as a file and also as a folder of %r" % (d, p)
    return None
