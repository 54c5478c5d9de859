"""The REAL GPU operator chart (../shared/upstream/gpu-operator, with its node-feature-discovery
subchart) rendered by the real helm with the values the gpu_operator role computes, in
driver-present and in full mode:

- not one image outside the site registry, and none unpinned, across every rendered object -
  containers, init containers, hook Jobs, the operator's *_IMAGE variables - and across the
  ClusterPolicy spec, from which the operator composes its operands' images at run time;
- every image the role's list names is one the rendered objects use, and the other way round;
- every built-in object valid against the current Kubernetes schemas (kubernetes-validate,
  strict), the chart's CRDs valid CustomResourceDefinitions, and every custom resource (the
  ClusterPolicy) valid against the openAPIV3Schema of the chart's own CRD (jsonschema; the
  x-kubernetes-* extensions are not enforced by jsonschema, the API server's dry run in the role
  checks those)."""
import glob
import os
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gpu_helpers import CHART, HELM, need_chart_and_helm

from ansible_collections.llmops.onprem.plugins.filter.gpu_operator_images import gpu_operator_images
from ansible_collections.llmops.onprem.plugins.filter.gpu_operator_values import gpu_operator_values
from ansible_collections.llmops.onprem.plugins.filter.site_image import site_image
from ansible_collections.llmops.onprem.plugins.module_utils._oci import parse_reference

REG = "registry.site.internal:5000"
KUBE = kubernetes_validate.latest_version()
MODES = {
    "host": dict(mode="host"),
    "operator": dict(mode="operator", driver_os=["ubuntu22.04", "ubuntu24.04"]),
}


@pytest.fixture(scope="module", autouse=True)
def _chart():
    need_chart_and_helm()


def render(tmp_path, values, *args):
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(values))
    p = subprocess.run([HELM, "template", "gpu-operator", CHART, "-n", "gpu-operator", "-f", str(f), "--kube-version", KUBE]
                       + list(args), capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def crds():
    files = sorted(glob.glob(os.path.join(CHART, "crds", "*.yaml"))
                   + glob.glob(os.path.join(CHART, "charts", "node-feature-discovery", "crds", "*.yaml")))
    out = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            out.extend(d for d in yaml.safe_load_all(fh) if d)
    return out


def crd_schema(api_version, kind):
    group, version = api_version.split("/")
    for c in crds():
        if c["spec"]["group"] == group and c["spec"]["names"]["kind"] == kind:
            for v in c["spec"]["versions"]:
                if v["name"] == version:
                    return v["schema"]["openAPIV3Schema"]
    return None


def pod_specs(doc):
    spec = doc.get("spec") or {}
    if doc["kind"] == "Pod":
        return [spec]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    tmpl = spec.get("template") or {}
    return [tmpl["spec"]] if "spec" in tmpl else []


def object_images(docs):
    """(where, image) for every image reference in the rendered objects."""
    out = []
    for d in docs:
        where = "%s/%s" % (d["kind"], d["metadata"]["name"])
        for pod in pod_specs(d):
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                out.append((where + " container " + c["name"], c["image"]))
                for e in c.get("env", []):
                    if e["name"].endswith("_IMAGE") and "value" in e:
                        out.append((where + " env " + e["name"], e["value"]))
    return out


def cluster_policy_images(cp):
    """(component, image) for every image the ClusterPolicy names: repository/image:version, as the operator composes it."""
    out = []

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("repository") and node.get("image"):
                v = str(node.get("version") or "")
                out.append((".".join(path), "%s/%s%s%s" % (node["repository"], node["image"],
                                                           "@" if v.startswith("sha256:") else ":", v)))
            for k, v in node.items():
                walk(v, path + [k])
    walk(cp["spec"], [])
    return out


def assert_site_and_pinned(images):
    outside = ["%s: %s" % w for w in images if not w[1].startswith(REG + "/")]
    assert outside == [], "images outside the site registry"
    unpinned = []
    for where, ref in images:
        p = parse_reference(ref)
        if (not p["tag"] and not p["digest"]) or (p["tag"] == "latest" and not p["digest"]):
            unpinned.append("%s: %s" % (where, ref))
    assert unpinned == [], "unpinned images"


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_image_is_in_the_site_registry_and_pinned(tmp_path, mode):
    docs = render(tmp_path, gpu_operator_values(CHART, REG, **MODES[mode]))
    objs = object_images(docs)
    [cp] = [d for d in docs if d["kind"] == "ClusterPolicy"]
    cps = cluster_policy_images(cp)
    assert len(objs) >= 5 and len(cps) >= 10  # the operator, NFD master/worker/gc, the hooks; every component
    assert_site_and_pinned(objs)
    assert_site_and_pinned(cps)
    assert cp["spec"]["driver"]["enabled"] is (mode == "operator")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_image_list_is_what_the_rendered_chart_runs(tmp_path, mode):
    docs = render(tmp_path, gpu_operator_values(CHART, REG, **MODES[mode]))
    [cp] = [d for d in docs if d["kind"] == "ClusterPolicy"]
    listed = set(site_image(d["ref"], REG) for d in gpu_operator_images(CHART, **MODES[mode]))
    running = set(ref for _w, ref in object_images(docs))
    spec = cp["spec"]
    for component, ref in cluster_policy_images(cp):
        top = component.split(".")[0]
        if spec.get(top, {}).get("enabled", True) is False:
            continue
        if top in ("sandboxDevicePlugin", "kataSandboxDevicePlugin", "vfioManager", "vgpuDeviceManager", "ccManager",
                   "vgpuManager", "kataManager") and not spec.get("sandboxWorkloads", {}).get("enabled"):
            continue
        if top in ("driver", "gds", "gdrcopy") and component == top:
            ref = None  # the operator adds the node's OS to the tag: checked below
        if ref:
            running.add(ref)
    if mode == "operator":
        base = "%s/nvcr.io/nvidia/driver:%s" % (REG, spec["driver"]["version"])
        running |= set("%s-%s" % (base, os_tag) for os_tag in MODES[mode]["driver_os"])
    assert listed == running


def test_objects_are_valid_against_current_schemas_and_the_chart_crds(tmp_path):
    docs = render(tmp_path, gpu_operator_values(CHART, REG), "--include-crds")
    kinds = set()
    for d in docs:
        kinds.add(d["kind"])
        schema = crd_schema(d["apiVersion"], d["kind"]) if "." in d["apiVersion"].split("/")[0] else None
        if schema is not None:
            jsonschema.validate(d, schema)  # raises naming the path on a mismatch
        else:
            kubernetes_validate.validate(d, KUBE, strict=True)
    assert {"ClusterPolicy", "CustomResourceDefinition", "Deployment", "DaemonSet", "ClusterRole"} <= kinds


def test_the_crd_check_catches_a_wrong_cluster_policy(tmp_path):
    docs = render(tmp_path, gpu_operator_values(CHART, REG))
    [cp] = [d for d in docs if d["kind"] == "ClusterPolicy"]
    cp["spec"]["driver"]["enabled"] = "yes"
    with pytest.raises(jsonschema.ValidationError) as e:
        jsonschema.validate(cp, crd_schema(cp["apiVersion"], cp["kind"]))
    assert list(e.value.absolute_path) == ["spec", "driver", "enabled"]


def test_the_chart_defaults_would_reach_out(tmp_path):
    # The same checks on the chart as it comes: what the role's values prevent.
    docs = render(tmp_path, {})
    with pytest.raises(AssertionError, match="images outside the site registry"):
        assert_site_and_pinned(object_images(docs))
