# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the modules that talk to an S3-compatible endpoint."""

from __future__ import annotations


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  endpoint_url:
    description:
      - URL of the S3-compatible endpoint, C(https://host:port), without a path. Buckets are addressed path-style.
    type: str
    required: true
  access_key:
    description:
      - Access key of the credential that signs the requests (SigV4).
    type: str
    required: true
  secret_key:
    description:
      - Secret key of that credential. Never logged or returned.
    type: str
    required: true
  region:
    description:
      - Region used in the request signatures and for new buckets.
    type: str
    default: us-east-1
  ca_path:
    description:
      - PEM CA bundle that must have signed the endpoint's certificate. When set, the system trust store is not used.
      - When unset, the system trust store of the host running the module decides.
    type: path
  timeout:
    description:
      - Seconds to wait for a connection or an answer.
    type: int
    default: 10
requirements:
  - Python standard library only (http.client, ssl); SigV4 is implemented in the collection.
notes:
  - "The modules run wherever the task runs; the C(llmops.onprem.minio) role runs them on the controller (C(delegate_to: localhost))."
"""
