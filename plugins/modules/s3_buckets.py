#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: s3_buckets
short_description: Make sure buckets exist on an S3-compatible endpoint
version_added: 0.1.0
description:
  - Looks each bucket up with a signed GetBucketLocation and creates the missing ones.
  - Never deletes a bucket or changes an existing one.
  - Bucket names are checked against the S3 naming rules before any request is sent.
extends_documentation_fragment:
  - llmops.onprem.s3_endpoint
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: full
options:
  names:
    description:
      - Buckets that must exist.
    type: list
    elements: str
    required: true
  state:
    description:
      - Only C(present) is supported.
    type: str
    choices: [present]
    default: present
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Create the model-engine and checkpoint buckets
  llmops.onprem.s3_buckets:
    endpoint_url: https://10.89.0.2:9000
    ca_path: "{{ pki_ca_cert_controller_path }}"
    access_key: llmops-root
    secret_key: "{{ minio_root_password }}"
    names: [llm-engine, model-checkpoints]
  delegate_to: localhost
"""

RETURN = r"""
created:
  description: Buckets created (or, in check mode, that would be created).
  returned: always
  type: list
  elements: str
  sample: [model-checkpoints]
existing:
  description: Buckets that already existed.
  returned: always
  type: list
  elements: str
  sample: [llm-engine]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._s3_endpoint import (
    OnpremError, bucket_name_problems, endpoint_argument_spec, endpoint_from_params)


def argument_spec():
    spec = endpoint_argument_spec()
    spec.update(
        names=dict(type="list", elements="str", required=True),
        state=dict(type="str", choices=["present"], default="present"),
    )
    return spec


def check_names(names):
    problems = ["%r %s" % (n, "; ".join(bucket_name_problems(n))) for n in names if bucket_name_problems(n)]
    if problems:
        raise OnpremError("invalid bucket names: " + " | ".join(problems), kind="input")


def plan(states):
    """Pure: which buckets to create, from {name: present|missing|denied}."""
    denied = sorted(n for n, s in states.items() if s == "denied")
    if denied:
        raise OnpremError("the credential may not use bucket(s) %s (AccessDenied): they exist but belong to "
                          "someone else, or the credential lacks permissions" % ", ".join(denied), kind="http")
    return sorted(n for n, s in states.items() if s == "missing")


def run(endpoint, p, check_mode):
    check_names(p["names"])
    states = dict((name, endpoint.bucket_state(name)) for name in p["names"])
    to_create = plan(states)
    existing = sorted(n for n, s in states.items() if s == "present")
    if to_create and not check_mode:
        for name in to_create:
            endpoint.create_bucket(name)
    return dict(changed=bool(to_create), created=to_create, existing=existing,
                diff=dict(before=dict(buckets=existing), after=dict(buckets=sorted(existing + to_create))))


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = run(endpoint_from_params(module.params), module.params, module.check_mode)
    except OnpremError as e:
        module.fail_json(msg=str(e), **e.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
