# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: what changed in each stage's record in this run (the change report of an upgrade)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils._report import ReportError, site_changes as _site_changes

DOCUMENTATION = r"""
name: site_changes
short_description: What changed in each stage's record in this run, one line per stage
version_added: 1.0.0
description:
  - "The change report of the end-of-run summary (P(llmops.onprem.site_summary#role)) - after an upgrade (C(site.yml) with a
    newer bundle), what each stage changed. Compares each stage's record now (C(llmops_site.<stage>)) with the one the run
    started with (O(before), the site's state file as the run loaded it): the stages whose state in the stage table
    (P(llmops.onprem.site_stages#filter)) is C(changed)."
  - "One line per stage whose record differs - C(<stage>: <change>; <change>) - in O(stages) order (a stage once; a row
    such as 'image_mirror (push)' names the stage C(image_mirror); C(gpu_operator) is the record C(gpu)), then the
    other records by name; '<stage>: first run (no earlier record)' for a stage with no earlier record; nothing for a
    stage whose record is the same, nor for C(preflight) (a reading of the run, never in the state file)."
  - "A change - nested mappings flattened into dotted paths (C(checkpoints.tiny.digest)); a list of mappings matched by
    the first of C(name), C(ref), C(prefix), C(stage), C(path), C(node) that every element has, else by index
    (C(synced[tiny].digest 3f0c9d2e1a7b… -> 9b1f0a2c3d4e…)); a list of scalars compared as a set
    (C(pushed: +<new>, -<old>)); an element or key that came or went (C(synced[model-b] added),
    'helm removed (was <value>)'). Digests (64 hex, also inside a reference) are cut to 12 hex and C(…); a value longer
    than 60 characters is cut in the middle (its start and its end stay)."
  - "The values of a record that are readings of the run that wrote it - C(checkpoints) C(bytes_uploaded), C(uploaded),
    C(read_back), C(bytes_copied), C(copied); C(image_mirror) C(bytes_moved); C(vllm_serving) C(seconds), C(steps) - are no
    change (and the site's state file does not keep them, P(llmops.onprem.site_records_stable#filter))."
  - "At most O(cap) changes per stage, then C(and N more)."
positional: before, stages
options:
  _input:
    description: The stages' records now (C(llmops_site)), stage name to record (a mapping).
    type: dict
    required: true
  before:
    description: The records the run started from (the state file as the first play loaded it, C(site_state_loaded)).
    type: dict
    required: true
  stages:
    description: The stages, in the order of the lines (the stage table's rows); null - the records' names, sorted.
    type: list
    elements: str
  cap:
    description: The most changes listed per stage (0 - all).
    type: int
    default: 8
  pending:
    description:
      - "Check mode - stage name to the values a real run would record, for a stage that records nothing in check mode
        (C(bundle_import) imports nothing there; its verification result says what it would import). Combined over the
        stage's record; its line reads '<stage> (check mode, a real run would record): <change>; ...'."
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: What changed in this run, per stage
  ansible.builtin.debug:
    msg: "{{ llmops_site | llmops.onprem.site_changes(site_state_loaded, ['bundle_import', 'image_mirror (push)', 'checkpoints']) }}"
"""

RETURN = r"""
_value:
  description: One line per stage whose record differs from the one the run started with; empty when none does.
  type: list
  elements: str
  sample:
    - "bundle_import: created 2026-11-02T09:14:03Z -> 2026-12-01T10:02:44Z; manifest_sha256 3f0c9d2e1a7b… -> 9b1f0a2c3d4e…"
    - "image_mirror: images: +reg:5000/lab/app:2, -reg:5000/lab/app:1; pushed: +reg:5000/lab/app:2@sha256:9b1f0a2c3d4e…,
      -reg:5000/lab/app:1@sha256:3f0c9d2e1a7b…; superseded: +reg:5000/lab/app:1@sha256:3f0c9d2e1a7b…"
    - "checkpoints: synced[tiny].digest 3f0c9d2e1a7b… -> 9b1f0a2c3d4e…; synced[tiny].prefix tiny/3f0c9d2e1a7b… -> tiny/9b1f0a2c3d4e…"
    - "vllm_serving: first run (no earlier record)"
"""


def site_changes(records, before, stages=None, cap=8, pending=None):
    """See DOCUMENTATION."""
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
        raise AnsibleFilterError("site_changes: cap must be a whole number, 0 or more, got %r" % (cap,))
    try:
        return _site_changes(records, before, stages, cap, pending)
    except ReportError as e:
        raise AnsibleFilterError("site_changes: %s" % e) from e


class FilterModule(object):
    """llmops.onprem site change filters."""

    def filters(self):
        return {"site_changes": site_changes}
