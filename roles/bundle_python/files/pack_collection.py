# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack an installed collection directory as an installable Galaxy artifact, reproducibly.

usage: pack_collection.py <installed collection dir> <output .tar.gz>

An installed collection keeps MANIFEST.json and FILES.json, but installers may have left out
files FILES.json lists (the `ansible` PyPI package drops CI folders, for instance), and
ansible-galaxy refuses an artifact that lacks a listed file. So FILES.json is rewritten to the
files present, each checked against its recorded sha256 (a mismatch is an error: the installed
copy was modified), and MANIFEST.json gets FILES.json's new sha256.

The tar is reproducible (sorted members, owner 0, fixed mtimes, gzip without a timestamp), so
the output is rewritten only when its bytes would change. Prints "changed" or "unchanged".
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MTIME = 946684800  # 2000-01-01, fixed so the same content gives the same bytes


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def present_files(src, files_json):
    """FILES.json entries that exist in ``src``; files are checked against their sha256."""
    kept = []
    for entry in files_json["files"]:
        path = os.path.join(src, entry["name"])
        if entry["name"] == ".":
            kept.append(entry)
        elif entry["ftype"] == "dir" and os.path.isdir(path):
            kept.append(entry)
        elif entry["ftype"] == "file" and os.path.isfile(path):
            digest = sha256_file(path)
            if digest != entry["chksum_sha256"]:
                raise ValueError("%s: sha256 %s differs from FILES.json (%s); the installed collection was modified"
                                 % (path, digest, entry["chksum_sha256"]))
            kept.append(entry)
    return kept


def _info(name, size=0, is_dir=False, mode=0o644):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = 0o755 if is_dir else mode
    info.size = size
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack(src):
    """The artifact's bytes."""
    with open(os.path.join(src, "MANIFEST.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(src, "FILES.json")) as f:
        files_json = json.load(f)
    files_json["files"] = present_files(src, files_json)
    files_bytes = json.dumps(files_json, indent=4, sort_keys=True).encode("utf-8")
    manifest["file_manifest_file"]["chksum_sha256"] = hashlib.sha256(files_bytes).hexdigest()
    manifest_bytes = json.dumps(manifest, indent=4, sort_keys=True).encode("utf-8")

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("MANIFEST.json", manifest_bytes), ("FILES.json", files_bytes)):
            tar.addfile(_info(name, len(data)), io.BytesIO(data))
        for entry in sorted(files_json["files"], key=lambda e: e["name"]):
            if entry["name"] == ".":
                continue
            path = os.path.join(src, entry["name"])
            if entry["ftype"] == "dir":
                tar.addfile(_info(entry["name"], is_dir=True))
            else:
                mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with open(path, "rb") as f:
                    tar.addfile(_info(entry["name"], os.path.getsize(path), mode=mode), f)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: pack_collection.py <installed collection dir> <output .tar.gz>\n")
        return 2
    src, dest = argv[1], argv[2]
    try:
        data = pack(src)
    except (IOError, OSError, ValueError, KeyError) as e:
        sys.stderr.write("cannot pack %s: %s\n" % (src, e))
        return 1
    try:
        with open(dest, "rb") as f:
            if f.read() == data:
                print("unchanged")
                return 0
    except (IOError, OSError):
        pass
    tmp = dest + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.rename(tmp, dest)
    print("changed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
