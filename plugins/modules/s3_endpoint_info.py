#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: s3_endpoint_info
short_description: Check an S3-compatible endpoint, its TLS, credentials and buckets
version_added: 0.1.0
description:
  - Connects to the endpoint, verifies its certificate against O(ca_path), signs a request with
    each credential, and looks up each bucket, in that order. Changes nothing.
  - Endpoint problems are returned, not raised, so that a role can fail with a message naming
    its own variables. The module fails only on malformed parameters.
extends_documentation_fragment:
  - llmops.onprem.s3_endpoint
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: none
options:
  name:
    description:
      - Name for the credential given in O(access_key) and O(secret_key), used in RV(credentials).
    type: str
    default: main
  other_credentials:
    description:
      - More credentials to check (for example a read-only one). Buckets are looked up with the main credential only.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name used in RV(credentials).
        type: str
        required: true
      access_key:
        description: Access key.
        type: str
        required: true
      secret_key:
        description: Secret key. Never logged or returned.
        type: str
        required: true
  buckets:
    description:
      - Buckets to look up with the main credential.
    type: list
    elements: str
    default: []
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Check the site's object store before using it
  llmops.onprem.s3_endpoint_info:
    endpoint_url: https://s3.site.internal:443
    ca_path: /etc/llmops/pki/site-ca.crt
    access_key: "{{ model_engine_access_key }}"
    secret_key: "{{ model_engine_secret_key }}"
    name: readwrite
    other_credentials:
      - name: readonly
        access_key: "{{ serving_access_key }}"
        secret_key: "{{ serving_secret_key }}"
    buckets: [llm-engine, model-checkpoints]
  delegate_to: localhost
  register: store

- name: Fail unless the endpoint, TLS and credentials are fine
  ansible.builtin.assert:
    that: store.ok
    fail_msg: "{{ store.endpoint.error or store.credentials | map(attribute='error') | select | join('; ') }}"
"""

RETURN = r"""
ok:
  description: True when the endpoint was reached over verified TLS, every credential authenticated and no bucket was denied.
  returned: always
  type: bool
  sample: true
endpoint:
  description: Reachability and TLS of the endpoint.
  returned: always
  type: dict
  contains:
    url:
      description: The endpoint URL.
      type: str
      sample: https://127.0.0.1:9000
    reachable:
      description: Whether a TCP connection (and, for https, a TLS handshake) was made.
      type: bool
      sample: true
    tls_verified:
      description: Whether the certificate verified against O(ca_path) (or the system store). False for http.
      type: bool
      sample: true
    error_kind:
      description: C(unreachable), C(tls), or an empty string.
      type: str
      sample: ""
    error:
      description: What went wrong, or an empty string.
      type: str
      sample: ""
credentials:
  description: One entry per credential, the main one first.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "readwrite", "access_key": "model-engine", "valid": true, "error_code": "", "error": ""}]
buckets:
  description: Bucket names by state, as seen by the main credential.
  returned: always
  type: dict
  sample: {"present": ["llm-engine"], "missing": ["model-checkpoints"], "denied": []}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.onprem.plugins.module_utils._s3_endpoint import (
    OnpremError, endpoint_argument_spec, endpoint_from_params)


def argument_spec():
    spec = endpoint_argument_spec()
    spec.update(
        name=dict(type="str", default="main"),
        other_credentials=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True),
            access_key=dict(type="str", required=True, no_log=False),
            secret_key=dict(type="str", required=True, no_log=True),
        )),
        buckets=dict(type="list", elements="str", default=[]),
    )
    return spec


def _credential(endpoint, name):
    entry = dict(name=name, access_key=endpoint.access_key, valid=False, error_code="", error="")
    try:
        entry["valid"] = endpoint.authenticates()
    except OnpremError as e:
        entry.update(error_code=e.code or e.kind, error=str(e))
        if e.kind in ("unreachable", "tls"):
            raise
    return entry


def run(endpoint, p):
    """Probe the endpoint; read-only, so check mode runs it too."""
    result = dict(ok=False, credentials=[], buckets=dict(present=[], missing=[], denied=[]),
                  endpoint=dict(url=endpoint.url, reachable=False, tls_verified=False, error_kind="", error=""))
    endpoint.retries = 0
    try:
        main_cred = _credential(endpoint, p["name"])
    except OnpremError as e:
        result["endpoint"].update(error_kind=e.kind, error=str(e), reachable=e.kind == "tls")
        return result
    result["endpoint"].update(reachable=True, tls_verified=endpoint.scheme == "https")
    result["credentials"].append(main_cred)
    for other in p["other_credentials"]:
        result["credentials"].append(_credential(endpoint.with_credential(other["access_key"], other["secret_key"]),
                                                 other["name"]))
    if main_cred["valid"]:
        for bucket in p["buckets"]:
            result["buckets"][endpoint.bucket_state(bucket)].append(bucket)
    result["ok"] = all(c["valid"] for c in result["credentials"]) and not result["buckets"]["denied"]
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = run(endpoint_from_params(module.params), module.params)
    except OnpremError as e:
        module.fail_json(msg=str(e), **e.details)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
