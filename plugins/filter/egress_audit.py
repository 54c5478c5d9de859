# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The egress audit of rendered manifests."""

from __future__ import annotations

import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils._egress import audit
from ansible_collections.llmops.onprem.plugins.module_utils._oci import OnpremError

DOCUMENTATION = r"""
name: egress_audit
short_description: What rendered manifests would make a node or a pod reach outside the site
version_added: 0.3.0
description:
  - Scans the objects a stage is about to apply or install (the output of C(helm template), or a list of
    object definitions) and returns every finding, each naming the object (C(Kind namespace/name)) and the
    field (C(spec.template.spec.containers[engine].image)).
  - "The rules: C(outside-registry) - an image not in O(registry); C(unpinned) - an untagged or C(latest)
    image without a digest; C(pull-always) - C(imagePullPolicy: Always), also in an embedded manifest;
    C(public-url) - a URL whose host is not the site's (not a private address, not a cluster name, not
    one of O(site_hosts)); C(not-in-bundle) - an image whose upstream reference O(bundle_images) does not
    list (checked only when O(bundle_images) is given)."
  - Images are found in every container (C(containers), C(initContainers), C(ephemeralContainers)) and in
    custom resources that name them as C({repository, image, version}) (the GPU operator's ClusterPolicy).
  - A declared exception (O(exceptions)) moves a finding to C(excepted) with its reason, which the stage
    prints; nothing is excepted silently.
positional: registry
options:
  _input:
    description: The rendered objects, as multi-document YAML text or a list of dicts.
    type: raw
    required: true
  registry:
    description: The site registry C(host[:port][/prefix]); empty skips the C(outside-registry) rule.
    type: str
    required: true
  bundle_images:
    description:
      - The images the bundle carries (references, C({ref}) dicts, or its OCI layout's C(index.json)).
      - Null (the default) skips the C(not-in-bundle) rule, as on a site installed without a bundle.
    type: raw
  site_hosts:
    description: The site's own host names (and domains); a URL to them, or to a name under them, is not public.
    type: list
    elements: str
    default: []
  namespaces:
    description: Cluster namespaces; C(<service>.<namespace>) is a cluster name, not a public host.
    type: list
    elements: str
    default: []
  exceptions:
    description: Declared exceptions, each C(rule), C(reason) (printed) and optional C(object) and C(field) globs.
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Audit the rendered serving chart
  ansible.builtin.set_fact:
    vllm_serving_egress: >-
      {{ rendered.stdout | llmops.onprem.egress_audit(registry_connection.registry_host,
         bundle_images=bundle_index, site_hosts=['site.example']) }}

- name: Refuse what would reach outside the site
  ansible.builtin.fail:
    msg: "{{ vllm_serving_egress.problems | join('; ') }}"
  when: vllm_serving_egress.problems | length > 0
"""

RETURN = r"""
_value:
  description: The audit.
  type: dict
  contains:
    images: {description: Every image named, with C(object) and C(field)., type: list}
    findings: {description: The problems (C(rule), C(object), C(field), C(value), C(message))., type: list}
    problems: {description: The findings' messages., type: list}
    excepted: {description: The findings a declared exception covers, with its C(reason)., type: list}
    bundle_checked: {description: Whether the C(not-in-bundle) rule ran., type: bool}
"""


def egress_audit(manifests, registry, bundle_images=None, site_hosts=None, namespaces=None, exceptions=None):
    if isinstance(manifests, str):
        try:
            docs = [d for d in yaml.safe_load_all(manifests) if d]
        except yaml.YAMLError as e:
            raise AnsibleFilterError("egress_audit: the rendered manifests are not YAML: %s" % e)
    elif isinstance(manifests, list):
        docs = manifests
    elif isinstance(manifests, dict):
        docs = [manifests]
    else:
        raise AnsibleFilterError("egress_audit: expected rendered YAML text or a list of objects, got %s"
                                 % type(manifests).__name__)
    try:
        return audit(docs, registry or "", bundle_images=bundle_images, hosts=tuple(site_hosts or ()),
                     namespaces=tuple(namespaces or ()), exceptions=exceptions or ())
    except OnpremError as e:
        raise AnsibleFilterError("egress_audit: %s" % e)


class FilterModule(object):
    """llmops.onprem egress audit filter."""

    def filters(self):
        return {"egress_audit": egress_audit}
