# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Split an image reference into its parts (for values renderers that want repository and tag apart)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils._oci import (
    OnpremError, format_reference, parse_reference)

DOCUMENTATION = r"""
name: image_ref
short_description: Split an image reference into registry, repository, tag and digest
version_added: 0.1.0
description:
  - Parses an image reference with the grammar docker and containerd use, normalising short docker.io
    names (C(nginx) is C(docker.io/library/nginx)).
  - Feed it the output of the P(llmops.onprem.site_image#filter) filter to get the site registry's
    repository and tag apart, as many Helm charts want them (C(image.repository), C(image.tag)).
options:
  _input:
    description: An image reference.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Repository and tag of the site copy of the vLLM image
  ansible.builtin.set_fact:
    vllm_image_parts: "{{ 'public.ecr.aws/b2z8n5q1/vllm:v0.6.3' | llmops.onprem.site_image('registry.site.example:5000') | llmops.onprem.image_ref }}"
    # name: registry.site.example:5000/public.ecr.aws/b2z8n5q1/vllm, tag: v0.6.3, ...
"""

RETURN = r"""
_value:
  description: The parts of the reference; C(tag) and C(digest) are null when absent.
  type: dict
  contains:
    registry: {description: Registry host and port, such as C(docker.io)., type: str}
    repository: {description: Repository path within the registry, such as C(library/nginx)., type: str}
    name: {description: C(registry/repository)., type: str}
    tag: {description: The tag, or null., type: str}
    digest: {description: The digest (C(sha256:...)), or null., type: str}
    reference: {description: The full normalised reference., type: str}
"""


def image_ref(ref):
    try:
        p = parse_reference(ref)
    except OnpremError as e:
        raise AnsibleFilterError("image_ref: %s" % e)
    return dict(p, name="%s/%s" % (p["registry"], p["repository"]),
                reference=format_reference(p["registry"], p["repository"], p["tag"], p["digest"]))


class FilterModule(object):
    """llmops.onprem image reference parsing."""

    def filters(self):
        return {"image_ref": image_ref}
