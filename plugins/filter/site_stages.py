# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: one row per stage of site.yml (stage, state, where things are), for the summary and the report."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils._report import stage_rows, text_table

DOCUMENTATION = r"""
name: site_stages
short_description: One row per stage of site.yml - the stage, its state, and where its things are
version_added: 1.0.0
description:
  - The one source of the per-stage data that the end-of-run summary (P(llmops.onprem.site_summary#role)) prints as a
    table and that the site verification report (P(llmops.onprem.verify#role)) shows as its stage table.
  - State - C(skipped - <reason>) for a stage with a reason in O(skipped); C(not run (not selected by the tags)) for a
    stage outside O(selected); C(changed) when the stage's record (C(llmops_site.<stage>)) differs from the one the run
    started with (O(before), the site's state file as the run loaded it) in more than the values it holds about the run
    that wrote it (the bytes moved or uploaded, the seconds waited; P(llmops.onprem.site_changes#filter) says what
    changed); C(done) otherwise.
  - Where - O(where) for the stage when given, else what its record says (the CA file, a service's URL and host, the
    object store prefixes, the served models' URLs, ...), else C(-).
  - The stage C(prune) keeps no record. Its row's where says what the other stages' records still list as superseded
    (C(kept from earlier bundles - 1 image(s) ...)) or C(nothing left from earlier bundles); read any time
    (O(this_run=false)), its state is C(kept) or C(clean).
  - With O(table=true) returns the rows as aligned text lines (a header, then one line per stage).
positional: records, before, skipped, selected, where
options:
  _input:
    description: The rows' names, in order - a stage, or a stage and its part (C(image_mirror (push))); the first word names the stage.
    type: list
    elements: str
    required: true
  records:
    description: The stages' records now (C(llmops_site)).
    type: dict
    default: {}
  before:
    description: The records the run started from (the state file as the first play loaded it).
    type: dict
    default: {}
  skipped:
    description: Stage name to the reason it did not run (an empty reason - it ran).
    type: dict
    default: {}
  selected:
    description: The stages this run's tags select; null - every stage.
    type: list
    elements: str
  where:
    description: Stage name to where its things are, overriding what its record says.
    type: dict
    default: {}
  states:
    description: Stage name to a state that overrides the computed one.
    type: dict
    default: {}
  this_run:
    description:
      - States of this run (C(done), C(changed), C(not run)); C(false) (the verification report, read any time) gives
        C(recorded) for a stage with a record, else C(skipped - <reason>) or C(no record).
    type: bool
    default: true
  table:
    description: Return text lines instead of rows; O(_input) may then be the rows themselves.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: The summary table
  ansible.builtin.debug:
    msg: "{{ ['pki', 'redis'] | llmops.onprem.site_stages(llmops_site, site_state_loaded, {'redis': 'no host in the group redis'}, table=true) }}"
"""

RETURN = r"""
_value:
  description: One row per stage (C(stage), C(state), C(where)), or with O(table=true) text lines.
  type: list
  sample: [{stage: pki, state: done, where: "CA /srv/site/.private/pki/ca.crt (hosts: /etc/llmops/pki/llmops-onprem-ca.crt)"},
           {stage: redis, state: "skipped: no host in the group redis", where: "-"}]
"""


def site_stages(stages, records=None, before=None, skipped=None, selected=None, where=None, states=None, this_run=True,
                table=False):
    """See DOCUMENTATION."""
    if table and isinstance(stages, (list, tuple)) and stages and all(isinstance(s, dict) for s in stages):
        return text_table(stages)
    if not isinstance(stages, (list, tuple)) or not all(isinstance(s, str) for s in stages):
        raise AnsibleFilterError("site_stages: expected a list of stage names, got %r" % (stages,))
    for name, value in (("records", records), ("before", before), ("skipped", skipped), ("where", where), ("states", states)):
        if value is not None and not isinstance(value, dict):
            raise AnsibleFilterError("site_stages: %s must be a mapping, got %r" % (name, value))
    rows = stage_rows(stages, records, before, skipped, None if selected is None else list(selected), where, states,
                      bool(this_run))
    return text_table(rows) if table else rows


class FilterModule(object):
    """llmops.onprem site stage filters."""

    def filters(self):
        return {"site_stages": site_stages}
