#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bundle_pack
short_description: Pack a sealed bundle into standalone media segments (USB stick, FAT32, DVD)
version_added: 0.1.0
description:
  - Writes the files of a sealed bundle (see M(llmops.onprem.bundle_seal)) as C(bundle-0001.tar),
    C(bundle-0002.tar), ... into O(dest), each no larger than O(segment_size) and each a valid tar by itself
    (C(tar -tf) lists it, C(tar -xf) extracts it without the others).
  - A file larger than the room left in a segment is split into parts named
    C(<path>.part-0001-of-0003) ...; each part carries its own sha256 in C(segments.json).
  - C(segments.json) lists every segment (size, sha256) and member, is bound to the manifest by its sha256,
    and is signed with the same key into C(segments.json.sig). C(manifest.json) and its signature are copied
    next to the segments, so the site verifies the signatures before reading a single segment.
  - Before a byte is written, the free space of O(dest)'s file system (C(statvfs)) is compared with what the pack
    needs there - the exact size of every segment and table still to write, in the file system's allocation units,
    less the room of the files of the same name they replace (an interrupted pack's segments). A medium too small
    is refused, naming O(dest), the bytes needed and the bytes free, with nothing written; check mode refuses it
    too. A medium that already holds this pack complete needs no room and is not checked.
  - After writing, every segment is read back from O(dest) and its sha256 compared (O(read_back)), so a
    failing stick is caught on the connected side, not at the site. The read-back does not read the page cache
    on purpose - each segment is flushed to the medium (C(fsync)) and then dropped from the page cache
    (C(posix_fadvise) with C(POSIX_FADV_DONTNEED)) before it is read, so the bytes come from the medium.
    This is advice to the kernel, not a guarantee - a file system may ignore it, and a FUSE file system (for
    example C(exfat-fuse)), a loop device or the medium's own controller can still serve a read from a cache of
    their own. To be sure the medium holds the bytes, unplug and reinsert it and run C(playbooks/bundle_verify.yml).
  - Idempotent. When O(dest) already holds the segments of this manifest with the recorded sizes (and, with
    O(read_back), hashes), nothing is written.
  - Files in O(dest) that are not part of this pack are refused rather than deleted (the media is never
    cleaned up behind your back).
  - With O(medium_size) the segments are spread over several media (a bundle larger than one stick). The segments are
    planned as without it, in another order - the controller's bootstrap files first (medium 1 holds what
    C(llmops-verify.sh) extracts), then files of at most 16 MiB and charts (what M(llmops.onprem.bundle_inspect) and the
    preflight read), then the rest - and cut into media on segment boundaries - a segment never spans media, a split file's parts may. Every
    medium also carries C(manifest.json), C(segments.json) (which records the medium of each segment and the number of
    media), their signatures and the delta files, so each verifies by itself. One run writes one medium, O(medium),
    into O(dest) (the free-space check counts that medium's segments only); each run reads the whole bundle, because the
    signed C(segments.json) - the same on every medium - names every segment's sha256. See C(docs/airgap.md).
  - A delta directory (C(delta.json) beside the manifest, written by M(llmops.onprem.bundle_delta)) is packed
    the same way with only its carried files; C(delta.json) and its signature go next to the segments and
    C(segments.json) names the delta's sha256, so the site cannot mix a delta's segments with a full bundle's.
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: none
options:
  src:
    description: The sealed bundle directory.
    type: path
    required: true
  dest:
    description: Where the segments go (the mounted medium, or a staging folder). Created when missing.
    type: path
    required: true
  private_key:
    description: PEM file of the Ed25519 key the bundle was sealed with; signs C(segments.json).
    type: path
    required: true
  segment_size:
    description:
      - Largest segment, in bytes or with a unit (C(4095MiB), C(700MiB), C(8MiB)).
      - The default stays under FAT32's 4 GiB file size limit. On exFAT, ext4 or XFS a segment may be larger; the
        number of segments only changes how many files the medium holds (see C(docs/airgap.md)).
    type: str
    default: 4095MiB
  medium_size:
    description:
      - Spread the pack over several media of at most this size each, in bytes or with a unit (C(57GiB) for a 64 GB stick -
        leave room for the file system). The signed tables, which every medium carries, are counted in it.
      - A segment larger than O(medium_size) less the tables is refused, naming it (use a smaller O(segment_size)).
      - Unset, one medium holds the whole pack (as before; C(segments.json) then names no media).
    type: str
  medium:
    description:
      - Which medium (1 to the returned RV(media)) this run writes into O(dest), with O(medium_size). Default V(1).
      - O(dest) must hold nothing of another medium (files that are not this medium's are refused, never deleted).
    type: int
  read_back:
    description:
      - Read every segment back after writing (and on re-runs) and compare its sha256.
      - Each segment is flushed and dropped from the page cache before it is read, so the read comes from the
        medium where the kernel honours the advice (see the description).
    type: bool
    default: true
  progress_file:
    description:
      - A file that holds the transfer's progress while it runs, in the collection's one progress format (JSON with
        stage, bytes and files done and total, rate, ETA and state; see C(docs/progress.md)), replaced atomically at
        most twice a second and once at the end.
      - The P(llmops.onprem.progress#callback) callback shows it live in C(ansible-playbook)'s output.
    type: path
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Pack the bundle for a FAT32 stick
  llmops.onprem.bundle_pack:
    src: /srv/bundles/site-a
    dest: /media/usb
    private_key: "{{ inventory_dir }}/.private/bundle/signing-key.pem"

- name: Write medium 2 of a bundle spread over 64 GB sticks
  llmops.onprem.bundle_pack:
    src: /srv/bundles/site-a
    dest: /media/usb
    private_key: "{{ inventory_dir }}/.private/bundle/signing-key.pem"
    medium_size: 57GiB
    medium: 2
"""

RETURN = r"""
segments:
  description: Every segment of the pack with size, sha256 and the medium that holds it (size and sha256 are null in check mode).
  returned: always
  type: list
  elements: dict
  sample: [{name: bundle-0001.tar, size: 4293918720, sha256: 4a1c..., members: 3, medium: 1}]
media:
  description: How many media the pack takes (1 without O(medium_size)).
  returned: always
  type: int
medium:
  description: The medium this run wrote (1 without O(medium_size)).
  returned: always
  type: int
medium_segments:
  description: The segments this medium holds.
  returned: always
  type: list
  elements: str
medium_bytes:
  description: Total size of this medium's segments.
  returned: always
  type: int
media_spanning:
  description: Files whose parts lie on more than one medium (the import continues them from the next medium).
  returned: always
  type: list
  elements: str
bytes:
  description: Total size of the segments.
  returned: always
  type: int
split_files:
  description: Files that were split into parts across segments.
  returned: always
  type: list
  elements: str
"""

import base64
import hashlib
import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._bundle import (
    DELTA, DELTA_SIG, MANIFEST, MEDIA_FILES, SEGMENTS, SEGMENTS_SCHEMA, SEGMENTS_SIG, SIGNATURE, BundleError, canonical,
    VERIFY_SCRIPT, fs_space, hash_segment, parse_size, plan_media, plan_segments, read_bounded, read_json, segment_name,
    segment_sizes, sign, walk_files, write_segment)
from ansible_collections.llmops.onprem.plugins.module_utils._files import sha256_stored, write_atomic
from ansible_collections.llmops.onprem.plugins.module_utils._progress import ProgressWriter, human_bytes

SIG_SIZE = len(base64.b64encode(bytes(64))) + 1  # an Ed25519 signature as sign() writes it


def _current(dest, manifest_sha256, segment_size, read_back, delta_sha256=None, medium_size=None, medium=1):
    """The existing pack in dest when it is complete for this manifest (and delta, and medium), else None."""
    try:
        dummy, table = read_json(os.path.join(dest, SEGMENTS), SEGMENTS)
    except BundleError:
        return None
    if table.get("manifest_sha256") != manifest_sha256 or table.get("segment_size") != segment_size \
            or table.get("delta_sha256") != delta_sha256 or table.get("medium_size") != medium_size:
        return None
    if delta_sha256 and not os.path.isfile(os.path.join(dest, DELTA)):
        return None
    for s in table.get("segments", []):
        if s.get("medium", 1) != medium:
            continue
        p = os.path.join(dest, s["name"])
        if not os.path.isfile(p) or os.path.getsize(p) != s["size"]:
            return None
        if read_back and sha256_stored(p) != s["sha256"]:
            return None
    return table


def _delta(src, manifest, manifest_sha256):
    """A delta directory (delta.json beside the manifest): (its bytes, its sha256, the manifest reduced
    to the carried files); (None, None, manifest) for a full bundle."""
    if not os.path.lexists(os.path.join(src, DELTA)):
        return None, None, manifest
    ddata = read_bounded(os.path.join(src, DELTA), 256 * 1024 * 1024, DELTA)
    try:
        delta = json.loads(ddata.decode("utf-8"))
    except ValueError as e:
        raise BundleError("%s/delta.json is not valid JSON: %s" % (src, e))
    if delta.get("manifest_sha256") != manifest_sha256:
        raise BundleError("%s/delta.json belongs to another manifest: build the delta again (playbooks/bundle.yml with "
                          "bundle_receipt)" % src)
    carried = set(delta.get("carried") or [])
    files = {k: [e for e in v if e["path"] in carried] for k, v in manifest["files"].items()}
    files = {k: v for k, v in files.items() if v}
    reduced = dict(manifest, files=files, totals={"files": sum(len(v) for v in files.values()),
                                                  "bytes": sum(e["size"] for v in files.values() for e in v)})
    return ddata, hashlib.sha256(ddata).hexdigest(), reduced


def _size_on(path):
    """The size of the regular file at path, 0 when there is none."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    return st.st_size if os.path.isfile(path) and not os.path.islink(path) else 0


def _space_needed(dest, writes, block):
    """The most bytes the pack takes from the free space of dest's file system at any moment, writing
    ``writes`` ([(name, size, temporary name)], in order) into dest. Each file is written under its temporary
    name (a leftover there is removed first) and renamed over the one of its name, so while it is written the
    old file still holds its room; a file already there of the same name gives its room back once replaced.
    Sizes are counted in whole allocation units (block)."""
    def units(n):
        return (n + block - 1) // block * block

    taken = peak = 0 if os.path.isdir(dest) else block  # a new folder takes a unit
    for name, size, tmp in writes:
        tmp_old = units(_size_on(os.path.join(dest, tmp)))
        peak = max(peak, taken - tmp_old + units(size))
        taken += units(size) - tmp_old - units(_size_on(os.path.join(dest, name)))
    return peak


def _table(manifest_sha256, segment_size, delta_sha256, medium_size, media, segs):
    table = dict(schema=SEGMENTS_SCHEMA, manifest_sha256=manifest_sha256, segment_size=segment_size, segments=segs)
    if delta_sha256:
        table["delta_sha256"] = delta_sha256
    if medium_size:  # spread over several media: which medium holds each segment (absent: one medium holds all)
        table.update(medium_size=medium_size, media=max(media or [1]))
        for s, n in zip(segs, media):
            s["medium"] = n
    return table


def _placeholder(names, plan, manifest_sha256, segment_size, delta_sha256, medium_size, media):
    """segments.json as it will be written, with placeholder hashes: its exact size (an upper bound with media)."""
    sizes = segment_sizes(plan)
    segs = [dict(name=n, size=z, sha256="0" * 64, members=[dict(m, sha256="0" * 64) for m in ms]) for n, z, ms in zip(names, sizes, plan)]
    return canonical(_table(manifest_sha256, segment_size, delta_sha256, medium_size, media, segs))


def _tables_size(src, manifest_bytes, delta_sha256, placeholder):
    """Bytes of the signed tables every medium carries (and llmops-verify.sh, copied next to them)."""
    names = (SIGNATURE, VERIFY_SCRIPT) + ((DELTA, DELTA_SIG) if delta_sha256 else ())
    return manifest_bytes + len(placeholder) + SIG_SIZE + sum(_size_on(os.path.join(src, n)) for n in names)


def _check_space(src, dest, names, plan, mine, manifest_bytes, placeholder, delta_sha256):
    """Refuse, before a byte is written, a medium whose file system lacks the room for this pack: the segments
    (their exact sizes) it holds, the signed tables and their signatures, less what the files they replace free."""
    sizes = segment_sizes(plan)
    writes = [(names[i], sizes[i], names[i] + ".partial") for i in mine]
    writes += [(MANIFEST, manifest_bytes, MANIFEST + ".tmp"), (SIGNATURE, os.path.getsize(os.path.join(src, SIGNATURE)),
                                                               SIGNATURE + ".tmp")]
    if delta_sha256:
        writes += [(n, os.path.getsize(os.path.join(src, n)), n + ".tmp") for n in (DELTA, DELTA_SIG)]
    writes += [(SEGMENTS, len(placeholder), SEGMENTS + ".tmp"), (SEGMENTS_SIG, SIG_SIZE, SEGMENTS_SIG + ".tmp")]
    free, block = fs_space(dest)
    need = _space_needed(dest, writes, block)
    if need > free:
        raise BundleError("not enough space in %s: the pack needs %s (%d bytes) more, the file system has %s (%d bytes) "
                          "free. Use a larger medium or free space on it; nothing was written"
                          % (dest, human_bytes(need), need, human_bytes(free), free))
    return need


def _media(p, src, names, plan, data, manifest_sha256, segment_size, delta_sha256):
    """(medium_size or None, the medium number of each segment, this run's medium)."""
    medium = p.get("medium")
    if not p.get("medium_size"):
        if medium not in (None, 1):
            raise BundleError("medium %s without medium_size: set medium_size (the room on each medium) to spread the bundle "
                              "over several media" % medium)
        return None, [1] * len(plan), 1
    medium_size = parse_size(p["medium_size"])
    guess = [9999] * len(plan)  # the widest medium numbers: the tables' size is an upper bound
    tables = _tables_size(src, len(data), delta_sha256,
                          _placeholder(names, plan, manifest_sha256, segment_size, delta_sha256, medium_size, guess))
    media = plan_media(segment_sizes(plan), medium_size, tables)
    medium = medium or 1
    if not 1 <= medium <= max(media):
        raise BundleError("medium %d does not exist: this pack takes %d media of %s (medium_size), numbered 1 to %d"
                          % (medium, max(media), human_bytes(medium_size), max(media)))
    return medium_size, media, medium


def run(p, check_mode):
    src, dest = p["src"], p["dest"]
    data, manifest = read_json(os.path.join(src, MANIFEST), MANIFEST)
    manifest_sha256 = hashlib.sha256(data).hexdigest()
    dummy, delta_sha256, manifest = _delta(src, manifest, manifest_sha256)
    segment_size = parse_size(p["segment_size"])
    plan = plan_segments(manifest, segment_size, bootstrap_first=bool(p.get("medium_size")))
    names = [segment_name(i) for i in range(len(plan))]
    medium_size, media, medium = _media(p, src, names, plan, data, manifest_sha256, segment_size, delta_sha256)
    mine = [i for i, n in enumerate(media) if n == medium]
    if os.path.isdir(dest):
        foreign = [f for f in walk_files(dest, skip_root=MEDIA_FILES)
                   if f not in [names[i] for i in mine] and not f.endswith(".tar.partial")]
        if foreign:
            raise BundleError("%s already holds %s, which is not part of this pack%s: empty the medium or choose another "
                              "destination (bundle_pack never deletes files on the media)"
                              % (dest, foreign[0], (" (medium %d of %d)" % (medium, max(media))) if medium_size else ""))
    table = _current(dest, manifest_sha256, segment_size, p["read_back"], delta_sha256, medium_size, medium) \
        if os.path.isdir(dest) else None
    if table is None:
        _check_space(src, dest, names, plan, mine, len(data),
                     _placeholder(names, plan, manifest_sha256, segment_size, delta_sha256, medium_size, media), delta_sha256)
    stale_delta = [n for n in (DELTA, DELTA_SIG) if delta_sha256 is None and os.path.lexists(os.path.join(dest, n))]
    changed = table is None or bool(stale_delta)
    if stale_delta and not check_mode:  # a full pack over an earlier delta's: its delta.json is bundle_pack's own file
        for n in stale_delta:
            os.unlink(os.path.join(dest, n))
    if table is None and not check_mode:
        os.makedirs(dest, exist_ok=True)
        segs = []
        # Every segment is hashed (the signed table, the same on every medium, names them all); only this
        # medium's are written.
        with ProgressWriter(p["progress_file"], "bundle_pack", "%s -> %s" % (src, dest), phase="write",
                            bytes_total=manifest["totals"]["bytes"], files_total=len(names)) as prog:
            for i, (name, members) in enumerate(zip(names, plan)):
                if media[i] == medium:
                    size, digest = write_segment(os.path.join(dest, name), src, members, prog)
                else:
                    size, digest = hash_segment(src, members, prog)
                segs.append(dict(name=name, size=size, sha256=digest, members=members))
                prog.file_done()
            prog.done()
        if p["read_back"]:
            for i in mine:  # from the medium, not from the page cache: flushed, then dropped from the cache
                s = segs[i]
                got = sha256_stored(os.path.join(dest, s["name"]))
                if got != s["sha256"]:
                    raise BundleError("read-back of %s gives sha256 %s, but %s was written: the medium is failing; "
                                      "use another one" % (s["name"], got, s["sha256"]))
        table = _table(manifest_sha256, segment_size, delta_sha256, medium_size, media, segs)
        tdata = canonical(table)
        for name in (MANIFEST, SIGNATURE) + ((DELTA, DELTA_SIG) if delta_sha256 else ()):
            with open(os.path.join(src, name), "rb") as f:
                write_atomic(os.path.join(dest, name), f.read())
        write_atomic(os.path.join(dest, SEGMENTS), tdata)
        write_atomic(os.path.join(dest, SEGMENTS_SIG), sign(tdata, p["private_key"]))
    if table is None:  # check mode: the plan without hashes
        table = dict(segments=[dict(name=n, size=None, sha256=None, members=m, medium=k) for n, m, k in zip(names, plan, media)])
    split = sorted(set(m["path"] for s in table["segments"] for m in s["members"] if m["parts"]))
    here = [s for s in table["segments"] if s.get("medium", 1) == medium]
    where = {}
    for s in table["segments"]:
        for m in s["members"]:
            where.setdefault(m["path"], set()).add(s.get("medium", 1))
    return dict(changed=changed, bytes=sum(s["size"] or 0 for s in table["segments"]), split_files=split,
                segments=[dict(name=s["name"], size=s["size"], sha256=s["sha256"], members=len(s["members"]), medium=s.get("medium", 1))
                          for s in table["segments"]],
                media=max(media or [1]), medium=medium, medium_segments=[s["name"] for s in here],
                medium_bytes=sum(s["size"] or 0 for s in here),
                media_spanning=sorted(path for path, w in where.items() if len(w) > 1))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            dest=dict(type="path", required=True),
            private_key=dict(type="path", required=True, no_log=False),
            segment_size=dict(type="str", default="4095MiB"),
            read_back=dict(type="bool", default=True),
            progress_file=dict(type="path"),
            medium_size=dict(type="str"),
            medium=dict(type="int"),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module.params, module.check_mode)
    except (BundleError, OSError) as e:
        module.fail_json(msg=str(e))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
