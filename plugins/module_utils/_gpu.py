# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU facts of a node: from nvidia-smi's CSV query on the host, or from the labels NVIDIA GPU
feature discovery (GFD) puts on the Kubernetes node. Both give the same fact, so later stages
read one shape whichever source a site has.

Private to this collection: the API may change without notice. Standard library only: the
nvidia_driver_info module ships this file to the GPU hosts.
"""

from __future__ import annotations

import re

from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError

# The one nvidia-smi query every reader uses (the module, tests/gpu/check.sh, the docs).
SMI_FIELDS = ("index", "name", "memory.total", "driver_version", "mig.mode.current", "compute_cap")
SMI_ARGS = ["--query-gpu=" + ",".join(SMI_FIELDS), "--format=csv,noheader,nounits"]

LABEL = "nvidia.com/"
GFD_LABELS = ("gpu.product", "gpu.family", "gpu.memory", "gpu.count")

# model-engine's GpuType enum (model_engine_server/domain/entities/gpu_type.py): the value its
# endpoints select nodes by (node label k8s.amazonaws.com/accelerator). No value for H200, L40S, B200.
_GPU_TYPES = (
    (re.compile(r"(^|-)T4($|-)"), None, "nvidia-tesla-t4"),
    (re.compile(r"(^|-)A10($|-)"), None, "nvidia-ampere-a10"),
    (re.compile(r"(^|-)A100(-|$)"), 60000, "nvidia-ampere-a100e"),   # the 80 GB A100
    (re.compile(r"(^|-)A100(-|$)"), 0, "nvidia-ampere-a100"),
    (re.compile(r"(^|-)H100(-|$).*-MIG-1g\.20gb$"), None, "nvidia-hopper-h100-1g20gb"),
    (re.compile(r"(^|-)H100(-|$).*-MIG-3g\.40gb$"), None, "nvidia-hopper-h100-3g40gb"),
    (re.compile(r"(^|-)H100(-|$)(?!.*-MIG-)"), None, "nvidia-hopper-h100"),
)


def _err(msg):
    return OnpremError(msg, kind="input")


def gfd_product(name):
    """The value GFD gives nvidia.com/gpu.product for a device name: characters other than
    letters, digits, '-', '_', '.' and blanks dropped, runs of blanks joined by '-'."""
    return "-".join(re.sub(r"[^A-Za-z0-9\-_. ]", "", name or "").split())


def arch_family(major, minor):
    """GFD's nvidia.com/gpu.family for a CUDA compute capability."""
    families = {1: "tesla", 2: "fermi", 3: "kepler", 5: "maxwell", 6: "pascal", 9: "hopper", 10: "blackwell",
                12: "blackwell"}
    if major == 7:
        return "volta" if minor < 5 else "turing"
    if major == 8:
        return "ampere" if minor < 9 else "ada-lovelace"
    return families.get(major, "undefined")


def model_engine_gpu_type(product, memory_mib):
    """model-engine's GpuType for a GFD product label, or '' when its enum has none."""
    for pattern, min_mib, gpu_type in _GPU_TYPES:
        if pattern.search(product or ""):
            if min_mib is None or (memory_mib or 0) >= min_mib:
                return gpu_type
    return ""


def _int(value, what):
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise _err("%s is not a whole number: %r" % (what, value))


def parse_smi(text):
    """nvidia-smi ``--query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits`` as one dict per GPU."""
    gpus = []
    for n, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split(",")]
        if len(cols) != len(SMI_FIELDS):
            raise _err("nvidia-smi line %d has %d fields, expected %d (%s): %r"
                       % (n, len(cols), len(SMI_FIELDS), ",".join(SMI_FIELDS), line))
        row = dict(zip(SMI_FIELDS, cols))
        cap = row["compute_cap"]
        if not re.match(r"^\d+\.\d+$", cap):
            raise _err("nvidia-smi line %d: compute_cap %r is not MAJOR.MINOR (a driver older than R510 cannot "
                       "report it; the accepted driver versions are newer)" % (n, cap))
        gpus.append(dict(index=_int(row["index"], "nvidia-smi line %d index" % n), name=row["name"],
                         memory_mib=_int(row["memory.total"], "nvidia-smi line %d memory.total" % n),
                         driver_version=row["driver_version"], mig_mode=row["mig.mode.current"],
                         compute_cap=cap))
    return gpus


def _fact(node, product, count, memory_mib, driver_version, mig_mode, family, compute_cap, source, products=None):
    labels = {
        LABEL + "gpu.product": product,
        LABEL + "gpu.family": family,
        LABEL + "gpu.memory": str(memory_mib),
        LABEL + "gpu.count": str(count),
    }
    return dict(node=node, product=product, count=count, memory_mib=memory_mib, driver_version=driver_version,
                mig_mode=mig_mode, family=family, compute_cap=compute_cap, labels=labels,
                gpu_type=model_engine_gpu_type(product, memory_mib), products=products or {product: count},
                source=source)


def facts_from_smi(text, node=""):
    """One fact for a node from its nvidia-smi query output; None when it lists no GPU."""
    gpus = parse_smi(text)
    if not gpus:
        return None
    first = gpus[0]
    products = {}
    for g in gpus:
        products[gfd_product(g["name"])] = products.get(gfd_product(g["name"]), 0) + 1
    major, minor = (int(x) for x in first["compute_cap"].split("."))
    mig = first["mig_mode"] if first["mig_mode"] not in ("[N/A]", "N/A", "") else "N/A"
    return _fact(node, gfd_product(first["name"]), len(gpus), first["memory_mib"], first["driver_version"], mig,
                 arch_family(major, minor), first["compute_cap"], "nvidia-smi", products)


def facts_from_node(node):
    """One fact from a Kubernetes Node object (GFD's labels, the device plugin's allocatable
    nvidia.com/gpu); None when the node has no GPU label."""
    if not isinstance(node, dict):
        raise _err("a node must be a Kubernetes Node object (a dict), got %r" % (node,))
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    name = meta.get("name", "")
    product = labels.get(LABEL + "gpu.product")
    if not product:
        return None
    count_text = labels.get(LABEL + "gpu.count") or ((node.get("status") or {}).get("allocatable") or {}).get(LABEL + "gpu")
    if count_text is None:
        raise _err("node %s has nvidia.com/gpu.product but neither the label nvidia.com/gpu.count nor allocatable "
                   "nvidia.com/gpu" % name)
    count = _int(count_text, "node %s nvidia.com/gpu.count" % name)
    memory = _int(labels.get(LABEL + "gpu.memory", "0"), "node %s nvidia.com/gpu.memory" % name)
    driver = labels.get(LABEL + "cuda.driver-version.full") or ".".join(
        labels[LABEL + "cuda.driver." + k] for k in ("major", "minor", "rev") if LABEL + "cuda.driver." + k in labels)
    major, minor = labels.get(LABEL + "gpu.compute.major"), labels.get(LABEL + "gpu.compute.minor")
    cap = "%s.%s" % (major, minor) if major is not None and minor is not None else ""
    family = labels.get(LABEL + "gpu.family") or (arch_family(int(major), int(minor)) if cap else "undefined")
    mig = "Enabled" if "-MIG-" in product else ("Disabled" if labels.get(LABEL + "mig.capable") == "true" else "N/A")
    return _fact(name, product, count, memory, driver, mig, family, cap, "node-labels")


def facts_from_nodes(nodes):
    """One fact per GPU node of a list of Node objects, in the list's order."""
    return [f for f in (facts_from_node(n) for n in nodes or []) if f]


def placement_problems(models, facts):
    """What stops a GPU model from being placed on the site's GPU nodes, before anything is created: the product its
    entry selects (``gpu_product``, GFD's nvidia.com/gpu.product) on no node, or more GPUs per replica than any node
    with that product has (without GPU labels and without gpu_product nothing is known here: the readiness
    diagnosis names a pod the scheduler cannot place). ``models``: serving model entries (name, gpus, gpu_product, device); ``facts``: one GPU
    fact per node (facts_from_nodes, or llmops_site.gpu.nodes)."""
    facts = [f for f in facts or [] if f]
    have = ", ".join("%s (%s, %d GPU%s)" % (f["product"], f["node"], f["count"], "" if f["count"] == 1 else "s")
                     for f in facts) or "none (no node carries the label nvidia.com/gpu.product)"
    problems = []
    for m in models or []:
        gpus = int(m.get("gpus") or 0)
        if gpus <= 0 or m.get("device") == "cpu":
            continue
        name, product = m.get("name", "?"), m.get("gpu_product") or ""
        nodes = [f for f in facts if not product or f["product"] == product]
        if product and not nodes:
            problems.append("models[%s] selects nvidia.com/gpu.product=%s, which no node has; the cluster's GPU nodes: "
                            "%s. Set gpu_product to one of those products, or leave it out" % (name, product, have))
        elif nodes and max(f["count"] for f in nodes) < gpus:
            problems.append("models[%s] asks for %d GPUs per replica (tensor parallel), and no node%s has that many: %s"
                            % (name, gpus, " with " + product if product else "", have))
    return problems
