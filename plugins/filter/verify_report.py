# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: the site verification report, from the verify role's check lines, as data, HTML or failure lines."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils._report import ReportError, build, failures, render_html

DOCUMENTATION = r"""
name: verify_report
short_description: The site verification report, as data (JSON), as a self-contained HTML page, or as failure lines
version_added: 1.0.0
description:
  - Takes the check lines of the P(llmops.onprem.verify#role) role - each C(stage), C(check), C(status) (C(ok), C(warn),
    C(fail) or C(skipped)), C(detail) and, on a failing or warning line, C(fix) - and returns the report.
  - O(format=data) returns the report document (schema C(llmops.onprem/verify-report/v1)) - C(schema), C(site),
    C(generated), C(ok) (no line failed), C(counts) per status, C(stages) (per stage, in the order of C(site.yml), its
    C(ok) and C(lines)) and C(site_stages) (the rows of O(stages)).
  - O(format=html) takes that document (or the lines) and returns one HTML page - a table per stage, a green or red
    status cell per line, the fix on every red line; inline CSS only, no script, no link, no URL of its own. Every value
    is HTML-escaped, so a hostile object key or model name shows as text and never as markup.
  - O(format=failures) returns one line per failing check, C(stage / check - detail Fix - fix).
  - A line with an unknown status, without a stage or check, or failing without a fix is refused, naming it.
positional: site, generated, stages, format
options:
  _input:
    description: The check lines (or, with O(format=html) or O(format=failures), a report document).
    type: list
    elements: dict
    required: true
  site:
    description: The site's name (the inventory directory) shown in the title.
    type: str
    default: ""
  generated:
    description: When the checks ran (ISO 8601).
    type: str
    default: ""
  stages:
    description: The rows of P(llmops.onprem.site_stages#filter) (stage, state, where), shown as the site's stage table.
    type: list
    elements: dict
    default: []
  format:
    description: What to return.
    type: str
    choices: [data, html, failures]
    default: data
"""

EXAMPLES = r"""
- name: The report and its page
  ansible.builtin.set_fact:
    report: "{{ verify_lines | llmops.onprem.verify_report('site-a', now(utc=true).isoformat()) }}"
    page: "{{ verify_lines | llmops.onprem.verify_report('site-a', format='html') }}"
"""

RETURN = r"""
_value:
  description: The report document (O(format=data)), the HTML page (O(format=html)) or the failure lines (O(format=failures)).
  type: raw
  sample: {schema: llmops.onprem/verify-report/v1, site: site-a, generated: "2026-12-04T18:00:00+00:00", ok: false,
           counts: {ok: 5, warn: 0, fail: 1, skipped: 2},
           stages: [{stage: checkpoints, ok: false, lines: [{stage: checkpoints, check: "qwen object checksums", status: fail,
                     detail: "s3://model-checkpoints/qwen/ab12... - 1 of 5 object(s) differ from the manifest: config.json",
                     fix: "ansible-playbook -i <inventory> playbooks/site.yml --tags checkpoints -e checkpoints_read_back=true"}]}],
           site_stages: []}
"""


def verify_report(lines, site="", generated="", stages=None, format="data"):  # pylint: disable=redefined-builtin
    """See DOCUMENTATION."""
    if format not in ("data", "html", "failures"):
        raise AnsibleFilterError("verify_report: format must be data, html or failures, got %r" % (format,))
    try:
        if isinstance(lines, dict) and lines.get("schema"):
            report = lines
        elif isinstance(lines, (list, tuple)):
            report = build(lines, site, generated, stages)
        else:
            raise AnsibleFilterError("verify_report: expected a list of check lines or a report, got %r" % (lines,))
    except ReportError as e:
        raise AnsibleFilterError("verify_report: %s" % e) from None
    if format == "html":
        return render_html(report)
    if format == "failures":
        return failures(report)
    return report


class FilterModule(object):
    """llmops.onprem verification report filters."""

    def filters(self):
        return {"verify_report": verify_report}
