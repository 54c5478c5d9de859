# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: why S3 would reject a bucket name."""

from __future__ import annotations

from ansible_collections.llmops.onprem.plugins.module_utils._s3_endpoint import bucket_name_problems

DOCUMENTATION = r"""
name: s3_bucket_problems
short_description: List the S3 naming rules a bucket name breaks
version_added: 0.1.0
description:
  - Returns one sentence per broken rule of the S3 general-purpose bucket naming rules
    (3 to 63 characters; lowercase letters, digits, C(.) and C(-); a letter or digit at both
    ends; no C(..); not shaped like an IPv4 address; no reserved prefix or suffix).
  - An empty list means the name is valid.
positional: varname
options:
  _input:
    description: The bucket name.
    type: str
    required: true
  varname:
    description: Variable that holds the name; when given, each sentence starts with it and the name.
    type: str
"""

EXAMPLES = r"""
- name: Refuse a bucket name S3 would reject
  ansible.builtin.assert:
    that: minio_checkpoints_bucket | llmops.onprem.s3_bucket_problems | length == 0
    fail_msg: "{{ minio_checkpoints_bucket | llmops.onprem.s3_bucket_problems('minio_checkpoints_bucket') | join('; ') }}"
"""

RETURN = r"""
_value:
  description: The broken rules, e.g. C(may contain only lowercase letters, digits, '.' and '-').
  type: list
  elements: str
"""


def s3_bucket_problems(name, varname=None):
    """Reasons S3 rejects ``name``; empty when it is a valid bucket name."""
    problems = bucket_name_problems(name)
    if varname:
        return ["%s (%r) %s" % (varname, "" if name is None else str(name), p) for p in problems]
    return problems


class FilterModule(object):
    """llmops.onprem S3 filters."""

    def filters(self):
        return {"s3_bucket_problems": s3_bucket_problems}
