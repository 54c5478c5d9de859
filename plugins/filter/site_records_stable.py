# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: the stages' records as the site's state file keeps them (without the readings of the run that wrote them)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils._report import ReportError, stable_records

DOCUMENTATION = r"""
name: site_records_stable
short_description: The stages' records as the site's state file keeps them
version_added: 1.0.0
description:
  - "The stages' records (C(llmops_site)) without the values that describe the run that wrote them rather than the site -
    C(checkpoints) C(bytes_uploaded), C(uploaded), C(bytes_copied), C(copied), C(read_back); C(image_mirror)
    C(bytes_moved); C(vllm_serving) C(seconds), C(steps). The site's state file keeps this, so that a run that changes
    nothing leaves the file as it was (a second run reports C(changed=0)); this run's summary still reads the full
    records."
options:
  _input:
    description: The stages' records, stage name to record (a mapping).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Persist the records
  ansible.builtin.copy:
    content: "{{ llmops_site | llmops.onprem.site_records_stable | to_nice_json(sort_keys=true) }}\n"
    dest: "{{ site_state_file }}"
    mode: "0600"
"""

RETURN = r"""
_value:
  description: The records, each without its values of the run.
  type: dict
"""


def site_records_stable(records):
    """See DOCUMENTATION."""
    try:
        return stable_records(records)
    except ReportError as e:
        raise AnsibleFilterError("site_records_stable: %s" % e)


class FilterModule(object):
    """llmops.onprem state file filter."""

    def filters(self):
        return {"site_records_stable": site_records_stable}
