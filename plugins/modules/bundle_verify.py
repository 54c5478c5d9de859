#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bundle_verify
short_description: Verify an air-gap bundle against its signature and, optionally, import it
version_added: 0.1.0
description:
  - Reads a bundle directory, or media holding C(bundle-NNNN.tar) segments, without writing or deleting
    anything there (read-only media work).
  - Order of checks, each refusing the whole bundle with a message naming the file and the reason
    C(manifest.json) against C(manifest.json.sig) with the site's public key; C(segments.json) against its
    signature and against the manifest; every segment present with its recorded size; no file that is not listed;
    no listed file missing; free space at O(dest) for what still has to be copied.
  - Then streams every byte once - hashing it and, with O(dest), writing it there - and compares every part and
    every file with the signed sha256. Split files are reassembled straight into O(dest), with no temporary copy.
  - Resumable. Each file verified in O(dest) is recorded with its sha256, size, mtime and inode; a re-run (for
    example after the import was killed) skips those files without reading them again. A new bundle imported
    into the same O(dest) (an upgrade) copies only the files whose sha256 changed, and removes from O(dest) the
    files the new bundle no longer lists.
  - A bundle spread over several media (C(segments.json) names the medium of each segment) is read one medium at a time.
    O(src) may hold one medium or several (or all); the signed tables are checked first, then every segment of the
    media it holds. With O(dest), the files those segments complete are imported and recorded (the resume records); a
    file whose parts go on on a medium not there yet is kept as C(<path>.partial) in O(dest), and the run that brings the
    next medium hashes that partial file again, part by part, against C(segments.json) before it appends to it. While
    media are missing the result is C(imported=false) with RV(media_missing) and RV(media_message) naming the next
    medium to insert; C(.llmops-import/media.json) in O(dest) remembers the bundle, and a medium of another bundle is then
    refused before anything is written. Without O(dest), each medium verifies by itself (every part against its signed
    sha256) and RV(media_missing) names the media not verified in this run.
  - The import counts as done only when every file verified; then C(.llmops-import/manifest.json) is written and
    per-model checkpoint manifests land in C(.llmops-import/checkpoints/<model>.json) (what
    M(llmops.onprem.checkpoint_sync) and the in-cluster model-pull read), derived from the signed manifest.
  - Check mode with O(dest) is cheap and writes nothing (no file, no state, no progress). It checks the signatures,
    the listing and every size against the signed manifest, and returns the plan - C(files_copied) and
    C(bytes_copied) say what a real run would copy - with C(imported=false) unless O(dest) already holds this very
    bundle, verified. Later stages that need the imported files check C(imported). Without O(dest), check mode
    verifies every byte as a real run does.
  - Refuses a bundle created earlier than the one O(dest) last imported (a rollback to an older, validly signed
    bundle) unless O(allow_downgrade) is set; the last import is recorded in C(.llmops-import/imported.json), in
    O(dest), not on the media.
  - Never follows a symbolic link in O(dest). A link (or other special file) anywhere in O(dest) is refused before
    anything is written, and files are created relative to folder descriptors with no-follow, exclusive opens.
  - Sizes on the media are compared with the signed sizes before a byte is read, and no file is read past its
    signed size; segments are parsed with bounded headers (a PAX header over 64 KiB, a link or a GNU long name is
    refused), so memory stays small whatever the media holds.
  - Refuses a O(public_key) that lies inside O(src) or O(dest); the key must come out of band.
  - Imports a delta bundle (C(delta.json) beside the manifest, built by M(llmops.onprem.bundle_delta)) - C(delta.json) is
    checked against its signature and bound to the manifest, and only its carried files must be on O(src). Every file the
    delta does not carry is taken from O(dest) (the last import) - at its own path, or at a path the last import's records
    say holds that sha256 - and hashed against the new signed manifest, bounded by its signed size and never through a
    link, before anything is written. A delta whose base O(dest) does not hold is refused with the missing files listed; a
    held file that differs is refused by name. Afterwards O(dest) holds what a full import of the same bundle gives.
    See C(docs/lifecycle.md).
extends_documentation_fragment:
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: none
options:
  src:
    description: The bundle directory or the mounted media with segments.
    type: path
    required: true
  public_key:
    description: PEM file of the Ed25519 public key the site trusts. It must not come from the bundle itself.
    type: path
    required: true
  dest:
    description: Import into this directory. Without it the bundle is only verified.
    type: path
  progress_file:
    description:
      - A file that holds the transfer's progress while it runs, in the collection's one progress format (JSON with
        stage, bytes and files done and total, rate, ETA and state; see C(docs/progress.md)), replaced atomically at
        most twice a second and once at the end.
      - The P(llmops.onprem.progress#callback) callback shows it live in C(ansible-playbook)'s output.
    type: path
  allow_downgrade:
    description:
      - Import a bundle created earlier than the one O(dest) last imported. Off by default, so that an old, validly
        signed bundle cannot roll the site back; turn it on for one deliberate downgrade.
    type: bool
    default: false
  reverify:
    description:
      - Ignore the resume state in O(dest) and hash every file already there again; files that still match the signed
        manifest are kept, the rest are copied. Use it when O(dest) may have been changed by someone else.
    type: bool
    default: false
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Verify the stick and import it
  llmops.onprem.bundle_verify:
    src: /media/usb
    public_key: /etc/llmops/bundle-signing.pub.pem
    dest: /var/lib/llmops/bundle
    progress_file: /var/lib/llmops/bundle-import.progress

- name: Go back to an older bundle on purpose, checking every file already in place
  llmops.onprem.bundle_verify:
    src: /media/usb
    public_key: /etc/llmops/bundle-signing.pub.pem
    dest: /var/lib/llmops/bundle
    allow_downgrade: true
    reverify: true
"""

RETURN = r"""
manifest_sha256:
  description: sha256 of the verified C(manifest.json) (the bundle's id).
  returned: success
  type: str
created:
  description: When the bundle was built (UTC, from the signed manifest).
  returned: success
  type: str
  sample: "2026-12-01T10:00:00Z"
imported:
  description:
    - Whether O(dest) now holds this bundle, every file verified. False in check mode unless an earlier run
      imported this very bundle, and without O(dest).
  returned: success
  type: bool
check_mode_plan:
  description: True when the result is a check-mode plan (nothing was read beyond sizes, nothing written).
  returned: success
  type: bool
previous:
  description: The bundle O(dest) held before (its C(manifest_sha256) and C(created)), or null.
  returned: success
  type: dict
files_total:
  description: Files in the bundle.
  returned: success
  type: int
bytes_total:
  description: Bytes in the bundle.
  returned: success
  type: int
files_copied:
  description: Files copied (or, in check mode, that would be copied) into O(dest).
  returned: success
  type: int
files_skipped:
  description: Files already verified in O(dest) by an earlier run.
  returned: success
  type: int
files_removed:
  description: Files an earlier bundle left in O(dest) that this bundle does not list, removed after a successful import.
  returned: success
  type: list
  elements: str
bytes_copied:
  description: Bytes copied (or that would be copied).
  returned: success
  type: int
kinds:
  description: Files and bytes per kind.
  returned: success
  type: dict
images:
  description: Images with their pinned digests, from the manifest.
  returned: success
  type: list
  elements: dict
versions:
  description: The versions matrix the bundle was built from.
  returned: success
  type: dict
checkpoints:
  description: Per model, the checkpoint manifest digest and (with O(dest)) the path of its manifest file.
  returned: success
  type: dict
segmented:
  description: Whether the source held segments.
  returned: success
  type: bool
media:
  description: How many media the bundle is spread over (1 for one medium or a directory).
  returned: success
  type: int
media_here:
  description: The media O(src) holds.
  returned: success
  type: list
  elements: int
media_missing:
  description:
    - The media still needed. With O(dest), the media that hold a part of a file not yet imported (empty once
      RV(imported) is true); without O(dest), the media O(src) does not hold.
  returned: success
  type: list
  elements: int
media_message:
  description: For a bundle over several media, what was done and which medium to insert next; null for one medium.
  returned: success
  type: str
  sample: "medium 1 of 3 imported into /var/lib/llmops/bundle; insert medium 2 of 3 at /media/usb and run the import again (still needed: media 2, 3)"
delta:
  description:
    - For a delta bundle, its C(base) (as C(delta.json) names it), the files and bytes it C(carried), the files C(held) (taken
      from O(dest)), how many of those were verified in place (C(held_in_place)) and which were copied from another path of
      O(dest) (C(moved)); null for a full bundle.
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._bundle import BundleError, Importer


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            public_key=dict(type="path", required=True),
            dest=dict(type="path"),
            progress_file=dict(type="path"),
            allow_downgrade=dict(type="bool", default=False),
            reverify=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = Importer(p["src"], p["public_key"], p["dest"], p["progress_file"], module.check_mode,
                          allow_downgrade=p["allow_downgrade"], reverify=p["reverify"]).run()
    except BundleError as e:
        module.fail_json(msg=str(e))
    except OSError as e:
        module.fail_json(msg="bundle import failed: %s" % e)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
