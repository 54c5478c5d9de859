#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Add or refresh the `--hash=sha256:` entries of an exact-pin lock file, as
`pip-compile --generate-hashes` writes them, so that pip installs it with --require-hashes.

usage: lock_hashes.py LOCK [LOCK ...]          rewrite each lock with the hashes PyPI publishes
       lock_hashes.py --check LOCK [LOCK ...]  offline: every pin carries at least one hash

For each `name==version` pin it asks PyPI's JSON API (https://pypi.org/pypi/<name>/json) for the
files of that version and keeps the sha256 of each one a Linux x86_64 CPython could install: the
sdist, pure wheels, and CPython wheels for manylinux/linux x86_64 (abi3 and every cp3xx tag, so
one lock serves every Python version it is installed on). Windows, macOS, musllinux, other
architectures and other interpreters are left out. Comment lines and their order are kept; the
pins keep their order. Neither pip-tools nor uv is in the project's venv, hence this script.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
HASH = re.compile(r"^\s*--hash=sha256:[0-9a-f]{64}\s*\\?\s*$")
INDEX = "https://pypi.org/pypi/%s/json"


def wanted(filename):
    """Whether a Linux x86_64 CPython could install this distribution file."""
    if filename.endswith((".tar.gz", ".zip", ".tar.bz2")):
        return True
    if not filename.endswith(".whl"):
        return False
    parts = filename[:-len(".whl")].split("-")
    if len(parts) < 5:
        return False
    pythons, platforms = parts[-3].split("."), parts[-1].split(".")
    if not any(p.startswith(("py3", "cp3", "py2.py3")) or p == "py2" for p in pythons):
        return False
    # A compressed tag set (manylinux2014_x86_64.musllinux_1_1_x86_64) installs where any of its tags does.
    return any(p == "any" or (p.endswith("_x86_64") and p.startswith(("manylinux", "linux_"))) for p in platforms)


def hashes(name, version, fetch=None):
    """The sorted sha256 digests of name==version's files a Linux x86_64 CPython could install."""
    fetch = fetch or _fetch
    data = fetch(INDEX % name)
    files = data.get("releases", {}).get(version)
    if not files:
        raise ValueError("PyPI has no files for %s==%s" % (name, version))
    found = sorted({f["digests"]["sha256"] for f in files if wanted(f["filename"]) and not f.get("yanked")})
    if not found:
        raise ValueError("PyPI has no Linux x86_64 CPython file for %s==%s" % (name, version))
    return found


def _fetch(url):
    req = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "llmops-onprem-lock-hashes"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def parse(text):
    """[(kind, value)] with kind 'text' (a line kept as is) or 'pin' ((name, version, [hashes]))."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = PIN.match(line.strip())
        if not m:
            if line.strip() and not line.strip().startswith("#"):
                raise ValueError("cannot read the line %r: the lock holds name==version pins and comments only" % line)
            out.append(("text", line))
            i += 1
            continue
        found = []
        while lines[i].rstrip().endswith("\\") and i + 1 < len(lines) and HASH.match(lines[i + 1]):
            i += 1
            found.append(re.search(r"[0-9a-f]{64}", lines[i]).group(0))
        out.append(("pin", (m.group(1), m.group(2), found)))
        i += 1
    return out


def render(items):
    lines = []
    for kind, value in items:
        if kind == "text":
            lines.append(value)
            continue
        name, version, digests = value
        if not digests:
            lines.append("%s==%s" % (name, version))
            continue
        lines.append("%s==%s \\" % (name, version))
        lines.extend("    --hash=sha256:%s%s" % (h, " \\" if n < len(digests) - 1 else "") for n, h in enumerate(digests))
    return "\n".join(lines) + "\n"


def refresh(text, fetch=None):
    items = []
    for kind, value in parse(text):
        if kind == "pin":
            value = (value[0], value[1], hashes(value[0], value[1], fetch))
        items.append((kind, value))
    return render(items)


def unhashed(text):
    """The pins of a lock that carry no hash."""
    return ["%s==%s" % (v[0], v[1]) for k, v in parse(text) if k == "pin" and not v[2]]


def main(argv):
    check = argv[:1] == ["--check"]
    paths = argv[1:] if check else argv
    if not paths:
        sys.stderr.write(__doc__)
        return 2
    rc = 0
    for path in paths:
        with open(path) as f:
            text = f.read()
        if check:
            missing = unhashed(text)
            if missing:
                sys.stderr.write("lock_hashes: %s: pins without --hash=sha256: %s (run tests/tools/lock_hashes.py %s)\n"
                                 % (path, ", ".join(missing), path))
                rc = 1
            continue
        new = refresh(text)
        if new != text:
            with open(path, "w") as f:
                f.write(new)
            print("%s: hashes written" % path)
        else:
            print("%s: unchanged" % path)
    return rc


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ValueError as e:
        sys.stderr.write("lock_hashes: %s\n" % e)
        sys.exit(1)
