#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: minio_user
short_description: A MinIO user limited to one least-privilege policy, through MinIO's admin API
version_added: 0.1.0
description:
  - Writes a canned policy granting C(readonly) or C(readwrite) access to the given buckets and
    prefixes, makes sure the user exists, is enabled and authenticates with O(secret), and that
    this policy is the only one attached to it.
  - The requests are those of MinIO's admin client (madmin-go), signed with the admin credential
    in O(access_key)/O(secret_key) (normally the root user); bodies carrying secrets are encrypted
    with the admin secret key as madmin does.
  - Whether the user's secret is still right is checked with a request signed by the user's own
    credential, so a secret is only re-set when it does not authenticate.
  - Then a request the policy does not grant is signed with the user's credential
    (GetBucketLocation on a bucket outside O(resources)), and RV(policy_enforced) reports whether the
    server refused it. A server that records policies without enforcing them (the test stand-in)
    answers it, and so reports C(false).
  - B(Unverified against a running MinIO.) Request construction, signing and encryption are unit
    tested against madmin-go's and sio-go's sources and sio's test vectors; the test harness has
    no MinIO binary.
extends_documentation_fragment:
  - llmops.onprem.s3_endpoint
  - llmops.onprem.attributes
  - ansible.builtin.action_common_attributes
attributes:
  diff_mode:
    support: full
options:
  name:
    description:
      - Access key of the user.
    type: str
    required: true
  secret:
    description:
      - Secret key of the user (at least 8 characters for MinIO). Never logged or returned.
    type: str
    required: true
  policy_name:
    description:
      - Name of the canned policy written for this user.
    type: str
    required: true
  access:
    description:
      - C(readonly) grants GetObject and listing; C(readwrite) adds PutObject, DeleteObject and multipart uploads.
      - Neither grants bucket creation or deletion, policies, admin actions or listing all buckets.
    type: str
    choices: [readonly, readwrite]
    required: true
  resources:
    description:
      - Whole buckets (C(bucket)) or prefixes (C(bucket/prefix)) the policy covers.
    type: list
    elements: str
    required: true
  exclusive:
    description:
      - Detach every other policy from the user, so that it holds exactly O(policy_name).
    type: bool
    default: true
  api_version:
    description:
      - Admin API version in the request path. Community MinIO releases serve C(v3).
    type: str
    choices: [v3, v4]
    default: v3
requirements:
  - cryptography (AES-GCM for the encrypted admin request bodies)
author:
  - llmops.onprem maintainers (@llmops-onprem)
"""

EXAMPLES = r"""
- name: Read-only credential for serving pods
  llmops.onprem.minio_user:
    endpoint_url: https://10.89.0.2:9000
    ca_path: "{{ pki_ca_cert_controller_path }}"
    access_key: llmops-root
    secret_key: "{{ minio_root_password }}"
    name: llmops-serving
    secret: "{{ serving_secret }}"
    policy_name: llmops-serving-readonly
    access: readonly
    resources: [model-checkpoints, llm-engine/fine_tuned_weights]
  delegate_to: localhost
"""

RETURN = r"""
actions:
  description: Admin actions taken (or, in check mode, that would be taken), in order.
  returned: always
  type: list
  elements: str
  sample: ["put_policy", "create_user", "attach"]
policy_enforced:
  description:
    - Whether the server refused the user's credential a request outside its policy (C(AccessDenied) to
      GetBucketLocation on a bucket not in O(resources)).
    - C(null) when that could not be asked (check mode before the user exists or authenticates) or the answer was
      neither a refusal nor a reply.
  returned: always
  type: bool
  sample: true
policy:
  description: The policy document written for the user.
  returned: always
  type: dict
  sample: {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": ["arn:aws:s3:::llm-engine"]}]}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.llmops.onprem.plugins.module_utils._minio_admin import (
    AUTH_FAILURE_CODES, HAS_CRYPTOGRAPHY, MinioAdmin, build_policy, plan_user, split_resources, user_policies)
from ansible_collections.llmops.onprem.plugins.module_utils._s3_endpoint import (
    OnpremError, endpoint_argument_spec, endpoint_from_params)


def argument_spec():
    spec = endpoint_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        secret=dict(type="str", required=True, no_log=True),
        policy_name=dict(type="str", required=True),
        access=dict(type="str", required=True, choices=["readonly", "readwrite"]),
        resources=dict(type="list", elements="str", required=True),
        exclusive=dict(type="bool", default=True),
        api_version=dict(type="str", default="v3", choices=["v3", "v4"]),
    )
    return spec


def secret_authenticates(endpoint, name, secret, bucket):
    """Whether ``name``/``secret`` can sign requests (AccessDenied still means it can)."""
    try:
        endpoint.with_credential(name, secret).bucket_state(bucket)
        return True
    except OnpremError as e:
        if e.code in AUTH_FAILURE_CODES:
            return False
        raise


PROBE_BUCKET = "llmops-policy-probe"


def policy_enforced(endpoint, name, secret, resources):
    """Whether the server refuses ``name`` a request its policy does not grant: GetBucketLocation on a
    bucket outside ``resources`` (AccessDenied: True; answered: False; anything else: None)."""
    whole, prefixed = split_resources(resources)
    probe = PROBE_BUCKET
    while probe in whole or probe in prefixed:
        probe += "-x"
    try:
        state = endpoint.with_credential(name, secret).bucket_state(probe)
    except OnpremError:
        return None
    return state == "denied"


def describe(admin, p):
    """Read-only view of the current state."""
    user = admin.get_user(p["name"])
    whole, prefixed = split_resources(p["resources"])
    bucket = (whole or sorted(prefixed))[0]
    return dict(policy=admin.get_policy(p["policy_name"]), user=user,
                secret_ok=user is not None and secret_authenticates(admin.endpoint, p["name"], p["secret"], bucket))


def run(admin, p, check_mode):
    if p["name"] == admin.endpoint.access_key:
        raise OnpremError("name %r is the admin credential itself; choose another access key" % p["name"], kind="input")
    if len(p["name"]) < 3 or len(p["secret"]) < 8:
        raise OnpremError("MinIO needs an access key of at least 3 characters and a secret of at least 8 (name %r "
                          "has %d, the secret %d)" % (p["name"], len(p["name"]), len(p["secret"])), kind="input")
    policy = build_policy(p["access"], p["resources"])
    before = describe(admin, p)
    actions = plan_user(before, p["policy_name"], policy)
    if not p["exclusive"]:
        actions = [a for a in actions if a[0] != "detach"]
    if actions and not check_mode:
        for action, arg in actions:
            if action == "put_policy":
                admin.put_policy(p["policy_name"], policy)
            elif action in ("create_user", "reset_user"):
                admin.set_user(p["name"], p["secret"])
            elif action == "detach":
                admin.associate(False, p["name"], arg)
            elif action == "attach":
                admin.associate(True, p["name"], arg)
    enforced = None
    if not check_mode or (before["user"] is not None and before["secret_ok"]):
        enforced = policy_enforced(admin.endpoint, p["name"], p["secret"], p["resources"])
    user = before["user"]
    after_policies = [p["policy_name"]] + ([] if p["exclusive"] else
                                           [x for x in user_policies(user) if x != p["policy_name"]])
    return dict(
        changed=bool(actions), actions=[a[0] for a in actions], policy=policy, policy_enforced=enforced,
        diff=dict(
            before=dict(policy=before["policy"], user=None if user is None else dict(
                status=user.get("status"), policies=user_policies(user), secret_authenticates=before["secret_ok"])),
            after=dict(policy=policy, user=dict(status="enabled", policies=after_policies,
                                                secret_authenticates=True))))


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"))
    try:
        admin = MinioAdmin(endpoint_from_params(module.params), module.params["api_version"])
        result = run(admin, module.params, module.check_mode)
    except OnpremError as e:
        module.fail_json(msg=str(e), **e.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
