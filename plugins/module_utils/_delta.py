# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Day two: the site's receipt and the delta bundle (docs/lifecycle.md).

The receipt (``llmops.onprem.receipt/v1``, plain JSON, unsigned by design) says what a site's
import directory holds: the bundle it last imported, every file content it holds (sha256 and
size, each checked against the import's records or hashed again), and, for the engineer, the
images, blobs, packages, charts and checkpoints those files are. It is advice for the connected
side, never trusted by the site: a wrong receipt only gives a delta the site refuses.

A delta bundle is the new bundle's signed manifest unchanged, plus ``delta.json`` (signed with the
same key): which of the manifest's files it carries, and the base it was planned against. Planning
is by content: a file is carried when the receipt does not list its sha256 with its size. Paths
in the receipt are never used for anything.

Private to this collection: the API may change without notice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time

from ansible_collections.llmops.onprem.plugins.module_utils._bundle import (
    DELTA, DELTA_SCHEMA, DELTA_SIG, IMPORT_DIR, MANIFEST, MANIFEST_LIMIT, MANIFEST_SCHEMA, SIGNATURE, BundleError, DestDir,
    _hash_exactly, _stat_key, canonical, checkpoint_manifests, human, kind_of, manifest_files, read_bounded, sign,
    walk_files, _CLOEXEC)
from ansible_collections.llmops.onprem.plugins.module_utils._files import create_at, write_atomic
from ansible_collections.llmops.onprem.plugins.module_utils._paths import paths_problem

RECEIPT_SCHEMA = "llmops.onprem.receipt/v1"
# The largest receipt the build reads (a site of 100 000 files writes about 10 MiB).
RECEIPT_LIMIT = 64 * 1024 * 1024
# A metadata file (apt Packages index, Chart.yaml, packaged chart) the receipt reads to name versions.
METADATA_LIMIT = 16 * 1024 * 1024
# Always carried by a delta: the controller bootstrap and the verify-first script (root files,
# python/, collections/), so that the site checks and bootstraps a delta exactly as a full bundle.
ALWAYS_CARRIED = ("root", "python", "collections")
DONE = IMPORT_DIR + "/manifest.json"
STATE = IMPORT_DIR + "/state.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _utc():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---- the receipt (site side) ------------------------------------------------------------------

def _json_or(data, default):
    try:
        out = json.loads(data.decode("utf-8")) if data is not None else default
    except ValueError:
        return default
    return out if isinstance(out, type(default)) else default


def site_receipt(import_dir, verify=False):
    """The receipt of an import directory (a dict without 'written'), and the count of bytes hashed.

    A listed file counts as held when it is a regular file (never a link) of its signed size whose
    sha256 is either the import's record for this very file (size, mtime and inode unchanged since
    it was verified) or, when there is no such record or `verify` is set, the sha256 of its bytes
    (read up to the signed size). Anything else is listed under missing with the reason."""
    d = DestDir(import_dir, create=False)
    try:
        if d.fd is None:
            raise BundleError("%s does not exist: no bundle was imported there (site.yml's bundle_import stage imports one)" % import_dir)
        d.scan()  # a link or special file anywhere refuses the receipt, as it refuses an import
        data = d.read(DONE, MANIFEST_LIMIT)
        if data is None:
            raise BundleError("%s holds no finished import (%s is missing): import a bundle first (site.yml's bundle_import stage)"
                              % (import_dir, DONE))
        manifest = _json_or(data, {})
        if manifest.get("schema") != MANIFEST_SCHEMA or not isinstance(manifest.get("files"), dict):
            raise BundleError("%s in %s is not a bundle manifest (schema %r)" % (DONE, import_dir, manifest.get("schema")))
        files = manifest_files(manifest)
        why = paths_problem(list(files))
        if why:
            raise BundleError("%s in %s is unusable: the path %s" % (DONE, import_dir, why))
        state = _json_or(d.read(STATE, MANIFEST_LIMIT), {}).get("files", {})
        state = state if isinstance(state, dict) else {}
        held, missing, hashed = {}, [], 0
        for path, e in sorted(files.items()):
            st = d.lstat(path)
            if st is None:
                missing.append({"path": path, "sha256": e["sha256"], "size": e["size"], "why": "absent"})
                continue
            if st.st_size != e["size"]:
                missing.append({"path": path, "sha256": e["sha256"], "size": e["size"],
                                "why": "%d bytes, the manifest says %d" % (st.st_size, e["size"])})
                continue
            rec = state.get(path)
            if not verify and isinstance(rec, dict) and rec.get("sha256") == e["sha256"] and rec.get("stat") == _stat_key(st):
                held[path] = e
                continue
            f = d.open_read(path)
            got = None
            if f is not None:
                with f:
                    try:
                        got = _hash_exactly(f, e["size"], name=path)
                    except BundleError:
                        got = None
                hashed += e["size"]
            if got == e["sha256"]:
                held[path] = e
            else:
                missing.append({"path": path, "sha256": e["sha256"], "size": e["size"],
                                "why": "sha256 %s, the manifest says %s" % (got or "unreadable", e["sha256"])})
        spec = manifest.get("spec") if isinstance(manifest.get("spec"), dict) else {}
        receipt = {
            "schema": RECEIPT_SCHEMA,
            "bundles": [{"id": hashlib.sha256(data).hexdigest(), "name": spec.get("name"), "created": manifest.get("created"),
                         "versions": manifest.get("versions") or {}}],
            "content": {e["sha256"]: e["size"] for e in held.values()},
            "totals": {"files": len(files), "held": len(held), "held_bytes": sum(e["size"] for e in held.values()),
                       "missing": len(missing)},
            "missing": missing,
            "images": [{"ref": i.get("ref"), "digest": i.get("digest")} for i in manifest.get("images") or [] if isinstance(i, dict)],
            "blobs": sorted("sha256:" + p.rsplit("/", 1)[1] for p in held if p.startswith("images/blobs/sha256/")),
            "packages": _packages(d, held),
            "charts": _charts(d, held),
            "checkpoints": _checkpoints(manifest, held),
        }
        return receipt, hashed
    finally:
        d.close()


def _read_held(d, held, path):
    """A held metadata file's bytes, when small enough and still matching its sha256; else None."""
    e = held.get(path)
    if e is None or e["size"] > METADATA_LIMIT:
        return None
    data = d.read(path, METADATA_LIMIT)
    if data is None or hashlib.sha256(data).hexdigest() != e["sha256"]:
        return None
    return data


def _packages(d, held):
    from ansible_collections.llmops.onprem.plugins.module_utils._bundle_inspect import parse_packages_index
    out = {}
    for path in sorted(p for p in held if p.startswith("packages/") and p.count("/") == 2 and p.endswith("/Packages")):
        data = _read_held(d, held, path)
        if data is None:
            continue
        distro = path.split("/")[1]
        out[distro] = [{"name": s["name"], "version": s["version"], "arch": s["arch"]}
                       for s in parse_packages_index(data.decode("utf-8", "replace"))]
    return out


def _charts(d, held):
    from ansible_collections.llmops.onprem.plugins.module_utils._bundle_inspect import _tgz_chart_yaml, chart_fields
    out = []
    for path in sorted(p for p in held if kind_of(p) == "charts"):
        parts = path.split("/")
        if len(parts) == 3 and parts[2] == "Chart.yaml":
            name = parts[1]
        elif len(parts) == 2 and path.endswith(".tgz"):
            name = parts[1][:-len(".tgz")]
        else:
            continue
        data = _read_held(d, held, path)
        version = None
        try:
            text = data if data is None or path.endswith("Chart.yaml") else _tgz_chart_yaml(data, path)
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            version = chart_fields(text, path)["version"] if text else None
        except BundleError:
            version = None
        out.append({"name": name, "path": path, "version": version})
    return out


def _checkpoints(manifest, held):
    out = {}
    for name, (m, digest) in checkpoint_manifests(manifest).items():
        paths = ["models/%s/%s" % (name, f["path"]) for f in m["files"]]
        out[name] = {"digest": digest, "files": len(paths), "bytes": sum(f["size"] for f in m["files"]),
                     "held": all(p in held for p in paths)}
    return out


def write_receipt(import_dir, dest, verify=False, check_mode=False):
    """Write the receipt of import_dir to dest (atomically, a link at dest replaced, never followed).
    The 'written' time is kept when nothing else changed, so a second run changes nothing."""
    real_dest, real_dir = os.path.realpath(dest), os.path.realpath(import_dir).rstrip(os.sep) + os.sep
    if real_dest.startswith(real_dir):
        raise BundleError("the receipt %s lies inside the import directory %s: the next import would remove it. Write it "
                          "beside (the default is %s.receipt.json)" % (dest, import_dir, import_dir.rstrip("/")))
    receipt, hashed = site_receipt(import_dir, verify=verify)
    previous = None
    try:
        previous = json.loads(read_bounded(dest, RECEIPT_LIMIT, "the receipt").decode("utf-8"))
    except (BundleError, ValueError, UnicodeError):
        previous = None
    written = _utc()
    if isinstance(previous, dict) and {k: v for k, v in previous.items() if k != "written"} == receipt:
        written = previous.get("written", written)
    receipt["written"] = written
    data = canonical(receipt)
    old = None
    try:
        old = read_bounded(dest, RECEIPT_LIMIT, "the receipt")
    except BundleError:
        old = None
    changed = data != old
    if changed and not check_mode:
        parent = os.path.dirname(os.path.abspath(dest))
        if not os.path.isdir(parent):
            raise BundleError("the folder %s for the receipt does not exist" % parent)
        write_atomic(dest, data)
    return {"changed": changed, "path": dest, "receipt_sha256": hashlib.sha256(data).hexdigest(), "bundles": receipt["bundles"],
            "totals": receipt["totals"], "missing": receipt["missing"][:20], "bytes_hashed": hashed}


# ---- the receipt, read on the connected side ------------------------------------------------

def load_receipt(path):
    """(receipt dict, sha256 of its bytes): read bounded, never through a link, and checked. Only
    'bundles' and 'content' are used; every other section is for people."""
    data = read_bounded(path, RECEIPT_LIMIT, "the receipt")
    try:
        r = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeError) as e:
        raise BundleError("the receipt %s is not valid JSON (%s): write it again with playbooks/receipt.yml" % (path, e))
    return check_receipt(r, path), hashlib.sha256(data).hexdigest()


def check_receipt(r, where="the receipt"):
    if not isinstance(r, dict) or r.get("schema") != RECEIPT_SCHEMA:
        raise BundleError("%s has schema %r, this collection reads %r (playbooks/receipt.yml writes it)"
                          % (where, r.get("schema") if isinstance(r, dict) else None, RECEIPT_SCHEMA))
    content, bundles = r.get("content"), r.get("bundles")
    if not isinstance(content, dict):
        raise BundleError("%s is unusable: its 'content' is not a table of sha256 -> size" % where)
    for k, v in content.items():
        if not (isinstance(k, str) and _SHA256.match(k) and isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            raise BundleError("%s is unusable: content entry %r: %r is not a sha256 (64 lowercase hex digits) with a size in bytes"
                              % (where, str(k)[:80], v if isinstance(v, int) else str(v)[:40]))
    if not isinstance(bundles, list) or not all(isinstance(b, dict) and isinstance(b.get("id"), str) and _SHA256.match(b["id"])
                                                for b in bundles):
        raise BundleError("%s is unusable: its 'bundles' must list the imported bundles, each with its id (a sha256)" % where)
    return r


# ---- the delta plan (pure) --------------------------------------------------------------------

def plan_delta(manifest, receipt):
    """Which files of the new bundle's manifest a delta carries: those whose content (sha256 and
    size) the receipt does not hold, and always the controller bootstrap (ALWAYS_CARRIED kinds).
    Returns {carried, held: [paths], carried_bytes, held_bytes, full_bytes, base}."""
    content = receipt["content"]
    carried, held = [], []
    files = manifest_files(manifest)
    for path, e in sorted(files.items()):
        if kind_of(path) in ALWAYS_CARRIED or content.get(e["sha256"]) != e["size"]:
            carried.append(path)
        else:
            held.append(path)
    return {
        "carried": carried, "held": held,
        "carried_bytes": sum(files[p]["size"] for p in carried), "held_bytes": sum(files[p]["size"] for p in held),
        "full_bytes": sum(e["size"] for e in files.values()),
        "base": {"bundles": [{"id": b["id"], "name": b.get("name"), "created": b.get("created")} for b in receipt["bundles"]],
                 "files": len(held), "bytes": sum(files[p]["size"] for p in held)},
    }


def delta_document(manifest_sha256, plan, receipt_sha256):
    base = dict(plan["base"], receipt_sha256=receipt_sha256)
    return {"schema": DELTA_SCHEMA, "manifest_sha256": manifest_sha256, "base": base, "carried": plan["carried"],
            "totals": {"files": len(plan["carried"]), "bytes": plan["carried_bytes"]}}


# ---- the delta directory (connected side) -----------------------------------------------------

def _check_sealed_with(mdata, sdata, private_key, src):
    """The bundle's manifest must verify with the public half of the key that signs the delta."""
    import base64
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    try:
        with open(private_key, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        key.public_key().verify(base64.b64decode(sdata.strip(), validate=True), mdata)
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise BundleError("cannot check %s/manifest.json.sig with the signing key %s: %s" % (src, private_key, e))
    except InvalidSignature:
        raise BundleError("%s/manifest.json does not verify with the signing key %s: the bundle was sealed with another key "
                          "or changed after sealing; build it again" % (src, private_key))


def _file_sha(path, size):
    """sha256 of a regular file of exactly `size` bytes (no link followed), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | _CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return None
        return _hash_exactly(f, size)


def _copy_in(src, dest_root, rel, e):
    """Copy src to dest_root/rel through a new file (exclusive, no link followed), checking the sha256."""
    d = os.path.join(dest_root, os.path.dirname(rel))
    os.makedirs(d, exist_ok=True)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        name = os.path.basename(rel)
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | _CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            out = create_at(dfd, name + ".partial")
            with out:
                got = _hash_exactly(f, e["size"], out, name=rel)
            if got != e["sha256"]:
                os.unlink(name + ".partial", dir_fd=dfd)
                raise BundleError("%s in the bundle has sha256 %s, its manifest says %s: the bundle changed after it was sealed; "
                                  "build it again" % (rel, got, e["sha256"]))
        os.replace(name + ".partial", name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)


def build_delta(src, dest, private_key, receipt_path, check_mode=False):
    """Write the delta of the sealed bundle `src` against the site's receipt into `dest`: manifest.json
    and its signature as they are, delta.json signed with the same key, and the carried files. A second
    run with the same bundle and receipt changes nothing; files of an earlier delta not carried now are
    removed (dest must be empty or a delta directory)."""
    mdata = read_bounded(os.path.join(src, MANIFEST), MANIFEST_LIMIT, "the bundle's manifest.json")
    sdata = read_bounded(os.path.join(src, SIGNATURE), 4096, "the bundle's manifest.json.sig")
    try:
        manifest = json.loads(mdata.decode("utf-8"))
    except ValueError as e:
        raise BundleError("%s/manifest.json is not valid JSON: %s" % (src, e))
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise BundleError("%s/manifest.json is not a sealed bundle manifest" % src)
    _check_sealed_with(mdata, sdata, private_key, src)
    receipt, receipt_sha256 = load_receipt(receipt_path)
    msha = hashlib.sha256(mdata).hexdigest()
    plan = plan_delta(manifest, receipt)
    doc = canonical(delta_document(msha, plan, receipt_sha256))
    dsig = sign(doc, private_key)
    files = manifest_files(manifest)
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise BundleError("%s is not a directory: bundle_delta_dir must be a directory (created when missing)" % dest)
    present = walk_files(dest) if os.path.isdir(dest) else []
    if present and DELTA not in present:
        raise BundleError("%s already holds %s and is not a delta directory (no delta.json): choose an empty or new "
                          "bundle_delta_dir (nothing there is deleted)" % (dest, present[0]))
    real_src, real_dest = os.path.realpath(src).rstrip(os.sep) + os.sep, os.path.realpath(dest).rstrip(os.sep) + os.sep
    if real_dest.startswith(real_src) or real_src.startswith(real_dest):
        raise BundleError("bundle_delta_dir %s and the bundle %s must not contain each other" % (dest, src))
    control = {MANIFEST: mdata, SIGNATURE: sdata, DELTA: doc, DELTA_SIG: dsig}
    stale = [p for p in present if p not in control and p not in plan["carried"]]
    todo = [p for p in plan["carried"] if _file_sha(os.path.join(dest, p), files[p]["size"]) != files[p]["sha256"]]
    ctl = [n for n, b in control.items() if not os.path.isfile(os.path.join(dest, n))
           or read_bounded(os.path.join(dest, n), len(b) + 1, n) != b]
    changed = bool(stale or todo or ctl)
    if changed and not check_mode:
        os.makedirs(dest, exist_ok=True)
        for n in (DELTA, DELTA_SIG):  # an interrupted rewrite leaves no delta.json that claims a finished delta
            if os.path.lexists(os.path.join(dest, n)):
                os.unlink(os.path.join(dest, n))
        for p in stale:
            os.unlink(os.path.join(dest, p))
        for p in todo:
            _copy_in(os.path.join(src, p), dest, p, files[p])
        for n in (MANIFEST, SIGNATURE, DELTA, DELTA_SIG):
            write_atomic(os.path.join(dest, n), control[n])
        for d, dirs, dummy in os.walk(dest, topdown=False):
            for x in dirs:
                try:
                    os.rmdir(os.path.join(d, x))
                except OSError:
                    pass
    full, carried = plan["full_bytes"], plan["carried_bytes"]
    return {"changed": changed, "path": dest, "manifest_sha256": msha, "delta_sha256": hashlib.sha256(doc).hexdigest(),
            "base": plan["base"], "receipt_sha256": receipt_sha256,
            "carried": {"files": len(plan["carried"]), "bytes": carried}, "held": {"files": len(plan["held"]), "bytes": plan["held_bytes"]},
            "full": {"files": len(files), "bytes": full}, "ratio": (float(carried) / full) if full else 0.0,
            "summary": "delta carries %d of %d files, %s of %s (%.2f%%); base %s" % (
                len(plan["carried"]), len(files), human(carried), human(full), 100.0 * carried / full if full else 0.0,
                ", ".join(b["id"][:16] for b in plan["base"]["bundles"]) or "(none)")}
