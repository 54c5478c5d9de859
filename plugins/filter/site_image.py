# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The name an upstream image has in the site registry (one namespace per upstream registry)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.module_utils._oci import OnpremError, site_reference

DOCUMENTATION = r"""
name: site_image
short_description: Map an upstream image reference to its name in the site registry
version_added: 0.1.0
description:
  - Returns C(<registry>/<upstream registry>/<repository>[:tag][@digest]), the name under which
    M(llmops.onprem.oci_mirror) pushes the image and through which the node mirrors written by the
    C(llmops.onprem.image_mirror) role serve it. One namespace per upstream registry, so
    C(docker.io/x/y) and C(quay.io/x/y) never collide.
  - Short docker.io names are normalised first (C(nginx:1.25) is C(docker.io/library/nginx:1.25)); a tag
    and a digest are both kept.
  - A reference that already names the site registry is returned unchanged (mapping twice is harmless).
  - With an empty O(registry) the normalised upstream reference is returned.
  - Every values renderer of this collection takes image references only through this filter.
positional: registry
options:
  _input:
    description: The upstream image reference, such as C(public.ecr.aws/b2z8n5q1/vllm:v0.6.3).
    type: str
    required: true
  registry:
    description: The site registry, C(host[:port]) without a scheme (C(registry_connection.registry_host)).
    type: str
    required: true
  strict:
    description:
      - Refuse references that do not pin a version - no tag and no digest, or the tag C(latest) without a digest.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Render the vLLM image for the serving chart
  ansible.builtin.set_fact:
    vllm_image: "{{ 'public.ecr.aws/b2z8n5q1/vllm:v0.6.3' | llmops.onprem.site_image(registry_connection.registry_host, strict=true) }}"
    # registry.site.example:5000/public.ecr.aws/b2z8n5q1/vllm:v0.6.3
"""

RETURN = r"""
_value:
  description: The image reference in the site registry.
  type: str
  sample: registry.site.example:5000/docker.io/library/nginx:1.25
"""


def site_image(ref, registry, strict=False):
    """``ref`` as named in the site registry ``registry``."""
    try:
        return site_reference(ref, registry, strict=bool(strict))
    except OnpremError as e:
        raise AnsibleFilterError("site_image: %s" % e)


class FilterModule(object):
    """llmops.onprem image reference filters."""

    def filters(self):
        return {"site_image": site_image}
