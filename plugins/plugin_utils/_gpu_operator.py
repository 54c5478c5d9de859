# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""NVIDIA GPU operator chart: its images, read from the chart's own values.yaml, and the values
that point every one of them at the site registry.

Private to this collection: the API may change without notice. Controller side only (the
filters): it reads the chart with PyYAML, which target hosts need not have.

The chart describes each image as a mapping with ``repository``, ``image`` and ``version`` (the
operator composes ``repository/image:version``, or ``@version`` for a ``sha256:`` digest); the
node-feature-discovery subchart as ``image.repository`` and ``image.tag``. Walking the values
for those mappings, instead of naming the components here, means a new chart version brings
its new components into the list by itself.
"""

from __future__ import annotations

import copy
import os

import yaml

from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
from ansible_collections.llmops.onprem.plugins.module_utils._oci import parse_reference, site_reference

NFD_KEY = "node-feature-discovery"
# Components the operator runs only for sandboxed (VM passthrough, vGPU, Kata) workloads.
SANDBOX = frozenset(["vgpuManager", "vgpuDeviceManager", "vfioManager", "sandboxDevicePlugin",
                     "kataSandboxDevicePlugin", "ccManager", "kataManager"])
# Components whose tag the operator completes with the node's OS (<version>-ubuntu22.04).
OS_SUFFIXED = frozenset(["driver", "gds", "gdrcopy"])
# Components rendered only with the DRA enablement stack (gpuCluster.deployCR).
DRA = frozenset(["draDriver"])
# Images the operator's own Deployment names (DRIVER_MANAGER_IMAGE, VALIDATOR_IMAGE in its
# environment) whatever is switched on: listed always, so the operator never asks for one the
# site lacks.
OPERATOR_ENV = frozenset([("driver", "manager"), ("validator",)])
MODES = ("host", "operator")


def _err(msg):
    return OnpremError("gpu_operator: " + msg, kind="input")


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise _err("%s is missing: the chart directory must be the GPU operator chart (Chart.yaml, values.yaml, "
                   "charts/node-feature-discovery)" % path)
    except (OSError, yaml.YAMLError) as e:
        raise _err("cannot read %s: %s" % (path, e))


def read_chart(chart_dir):
    """The parts of the chart directory this module needs: values, appVersion, the NFD subchart."""
    chart = _read_yaml(os.path.join(chart_dir, "Chart.yaml"))
    values = _read_yaml(os.path.join(chart_dir, "values.yaml"))
    if chart.get("name") != "gpu-operator":
        raise _err("%s is the chart %r, not gpu-operator" % (chart_dir, chart.get("name")))
    out = dict(name=chart["name"], version=str(chart.get("version", "")), app_version=str(chart.get("appVersion", "")),
               values=values, nfd=None)
    nfd_dir = os.path.join(chart_dir, "charts", NFD_KEY)
    if os.path.isdir(nfd_dir):
        nfd_chart = _read_yaml(os.path.join(nfd_dir, "Chart.yaml"))
        out["nfd"] = dict(version=str(nfd_chart.get("version", "")), app_version=str(nfd_chart.get("appVersion", "")),
                          values=_read_yaml(os.path.join(nfd_dir, "values.yaml")))
    return out


def deep_merge(base, over):
    """``over`` merged into a copy of ``base``; mappings recursively, anything else replaced."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _get(tree, path, default=None):
    for k in path:
        if not isinstance(tree, dict) or k not in tree:
            return default
        tree = tree[k]
    return tree


def _image_specs(tree, path=()):
    """Every (path, mapping) under ``tree`` that describes an operator image."""
    if not isinstance(tree, dict):
        return
    if "repository" in tree and "image" in tree and isinstance(tree.get("image"), str):
        yield path, tree
    for k, v in tree.items():
        if path == () and k == NFD_KEY:
            continue
        if isinstance(v, dict):
            yield from _image_specs(v, path + (k,))


def _enabled(values, path):
    """A component runs when every ``enabled`` on its path (its own, its parent's) is true, plus
    the stack it belongs to: sandbox components with sandboxWorkloads, the DRA driver with gpuCluster."""
    top = path[0]
    if tuple(path) in OPERATOR_ENV:
        return True
    if top in SANDBOX and not _get(values, ("sandboxWorkloads", "enabled"), False):
        return False
    if top in DRA and not _get(values, ("gpuCluster", "deployCR"), False):
        return False
    for i in range(1, len(path) + 1):
        node = _get(values, path[:i])
        if isinstance(node, dict) and "enabled" in node and not node["enabled"]:
            return False
    return True


def _compose(repository, image, version):
    sep = "@" if str(version).startswith("sha256:") else ":"
    return "%s/%s%s%s" % (str(repository).rstrip("/"), image, sep, version)


def _pinned(ref, what):
    p = parse_reference(ref)
    if not p["tag"] and not p["digest"]:
        raise _err("%s has no version (%s); set its version in gpu_operator_values" % (what, ref))
    if p["tag"] == "latest" and not p["digest"]:
        raise _err("%s uses the tag 'latest' (%s), which moves; pin a version in gpu_operator_values" % (what, ref))
    return ref


def merged_values(chart, mode="host", toolkit=True, overrides=None):
    """The chart's values with the role's mode settings and the site's overrides applied."""
    if mode not in MODES:
        raise _err("driver mode must be one of %s, got %r" % (", ".join(MODES), mode))
    ours = {"driver": {"enabled": mode == "operator"}, "toolkit": {"enabled": bool(toolkit)}}
    values = deep_merge(deep_merge(chart["values"], ours), overrides or {})
    if mode == "host" and _get(values, ("driver", "enabled")):
        raise _err("driver mode 'host' (the driver on the host, from the nvidia_driver stage) contradicts "
                   "gpu_operator_values driver.enabled: true; set gpu_operator_driver_mode: operator for full mode")
    if _get(values, ("driver", "enabled")) and _get(values, ("driver", "usePrecompiled")):
        raise _err("driver.usePrecompiled is not supported: a precompiled driver image's tag follows the node's running "
                   "kernel, which this role does not pin; use the host driver (mode host) or the compiled driver image")
    return values, ours


def chart_images(chart, mode="host", toolkit=True, driver_os=None, overrides=None):
    """[{component, ref}] - the upstream reference of every image the chart and the operator run
    with these settings, sorted by component; switched-off components are left out."""
    values, _ours = merged_values(chart, mode, toolkit, overrides)
    driver_os = list(driver_os or [])
    out = []
    for path, spec in _image_specs(values):
        if not _enabled(values, path):
            continue
        name = ".".join(path)
        version = spec.get("version") or chart["app_version"]
        if not spec.get("repository") or not spec.get("image"):
            raise _err("%s is enabled but has no repository/image in the chart values; set them in "
                       "gpu_operator_values or switch it off" % name)
        ref = _compose(spec["repository"], spec["image"], version)
        if path[0] in OS_SUFFIXED and len(path) == 1:
            if not driver_os:
                raise _err("%s runs in the cluster (mode operator) and its image tag ends in the nodes' OS "
                           "(%s-<os>); set gpu_operator_driver_os, for example [ubuntu22.04]" % (name, version))
            for os_tag in driver_os:
                out.append(dict(component=name, ref=_pinned(_compose(spec["repository"], spec["image"],
                                                                     "%s-%s" % (version, os_tag)), name)))
            continue
        out.append(dict(component=name, ref=_pinned(ref, name)))
    if chart.get("nfd") and _get(values, ("nfd", "enabled"), False):
        nfd_image = deep_merge(_get(chart["nfd"]["values"], ("image",), {}), _get(values, (NFD_KEY, "image"), {}))
        tag = nfd_image.get("tag") or chart["nfd"]["app_version"]
        out.append(dict(component=NFD_KEY, ref=_pinned("%s:%s" % (nfd_image["repository"], tag), NFD_KEY)))
    out.sort(key=lambda d: (d["component"], d["ref"]))
    return out


def unique_refs(images):
    seen = []
    for d in images:
        if d["ref"] not in seen:
            seen.append(d["ref"])
    return seen


def site_values(chart, registry, mode="host", toolkit=True, driver_os=None, overrides=None):
    """The values to install the chart with: the mode settings, the site's overrides, and every
    image mapping (switched on or off) pointed at the site registry with its version pinned."""
    chart_images(chart, mode, toolkit, driver_os, overrides)  # refuses what cannot be pinned or listed
    values, ours = merged_values(chart, mode, toolkit, overrides)
    out = deep_merge(ours, overrides or {})
    for path, spec in _image_specs(values):
        if not spec.get("repository") or not spec.get("image"):
            continue  # nothing to point anywhere (vgpuManager: the site's own image, switched off)
        version = spec.get("version") or chart["app_version"]
        probe = _compose(spec["repository"], spec["image"], version)
        mapped = site_reference(probe, registry)
        tail = "/%s%s%s" % (spec["image"], "@" if str(version).startswith("sha256:") else ":", version)
        if not mapped.endswith(tail):
            raise _err("cannot map %s into the site registry (got %s)" % (probe, mapped))
        node = out
        for k in path:
            node = node.setdefault(k, {})
        node["repository"] = mapped[:-len(tail)]
        node["version"] = str(version)
    if chart.get("nfd"):
        nfd_image = deep_merge(_get(chart["nfd"]["values"], ("image",), {}), _get(values, (NFD_KEY, "image"), {}))
        tag = nfd_image.get("tag") or chart["nfd"]["app_version"]
        mapped = site_reference("%s:%s" % (nfd_image["repository"], tag), registry)
        out.setdefault(NFD_KEY, {}).setdefault("image", {}).update(repository=mapped[:-len(":" + tag)], tag=str(tag))
    return out


def missing_images(required, available):
    """The references in ``required`` that ``available`` lacks, in order. A reference is matched
    by its normalised name and tag (``nvcr.io/nvidia/x:1`` matches ``nvcr.io/nvidia/x:1@sha256:...``)."""
    def key(ref):
        p = parse_reference(ref)
        return (p["registry"], p["repository"], p["tag"] or "", "" if p["tag"] else (p["digest"] or ""))
    have = set()
    for ref in available or []:
        have.add(key(ref))
    return [r for r in required if key(r) not in have]
