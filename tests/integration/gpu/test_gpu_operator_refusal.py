"""llmops.onprem.gpu_operator on the controller with no cluster, against the real GPU operator
chart and the real helm: the honest refusal before helm install when the bundle lacks images
(every missing one listed), and the stage passing - with its GPU facts exported - when the
bundle carries them all."""
import pytest

from gpu_helpers import CHART, HELM, need_chart_and_helm, playbook

from ansible_collections.llmops.onprem.plugins.filter.gpu_operator_images import gpu_operator_images

REF = "org.opencontainers.image.ref.name"


@pytest.fixture(autouse=True)
def _chart():
    need_chart_and_helm()


def run(tmp_path, bundle_images, **extra):
    vals = dict(gpu_chart=CHART, gpu_helm=HELM, gpu_bundle_images=bundle_images, gpu_out=str(tmp_path / "gpu.json"))
    vals.update(extra)
    return playbook("gpu_operator.yml", vals)


def needed(**kw):
    return [d["ref"] for d in gpu_operator_images(CHART, **kw)]


def test_refuses_an_empty_bundle_listing_every_missing_image(tmp_path):
    proc, out = run(tmp_path, [])
    assert proc.returncode != 0
    assert out is None
    text = " ".join(proc.stdout.split())
    refs = needed()
    assert "the bundle lacks %d of the %d images the GPU operator v26.7.0 needs in host mode" % (len(refs), len(refs)) in text
    for ref in refs:
        assert ref in text
    assert "The bundle must carry them" in text and "Nothing was installed" in text


def test_refuses_naming_only_the_image_the_bundle_lacks(tmp_path):
    refs = needed()
    lacking = "nvcr.io/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless"
    assert lacking in refs
    index = {"schemaVersion": 2, "manifests": [{"annotations": {REF: r + "@sha256:" + "ab" * 32}} for r in refs if r != lacking]}
    proc, out = run(tmp_path, index)
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert "the bundle lacks 1 of the %d images" % len(refs) in text
    assert "host mode: %s. The bundle must carry them" % lacking in text


def test_full_mode_needs_the_driver_image_of_each_node_os(tmp_path):
    refs = needed()  # what a driver-present bundle carries
    proc, out = run(tmp_path, refs, gpu_mode="operator", gpu_os=["ubuntu22.04", "ubuntu24.04"])
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert "the bundle lacks 2 of the %d images the GPU operator v26.7.0 needs in operator mode" % (len(refs) + 2) in text
    assert ("operator mode: nvcr.io/nvidia/driver:595.91.07-ubuntu22.04, nvcr.io/nvidia/driver:595.91.07-ubuntu24.04. "
            "The bundle must carry them") in text


def test_full_mode_without_the_node_os_is_refused_first(tmp_path):
    proc, out = run(tmp_path, [], gpu_mode="operator")
    assert proc.returncode != 0
    assert "full mode (operator) needs gpu_operator_driver_os" in " ".join(proc.stdout.split())


def test_passes_when_the_bundle_carries_every_image_and_exports_the_gpu_facts(tmp_path):
    refs = needed()
    proc, out = run(tmp_path, [dict(ref=r) for r in refs])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out == {"mode": "host", "chart_version": "v26.7.0", "images": refs, "nodes": []}


def test_values_the_chart_refuses_fail_before_the_bundle_check(tmp_path):
    proc, out = run(tmp_path, [], gpu_values={"devicePlugin": {"config": {"create": True, "name": "x"}}})
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert "the GPU operator chart (%s) refuses these values" % CHART in text
    assert "devicePlugin.config.data cannot be empty when devicePlugin.config.create is set to true" in text
    assert "the bundle lacks" not in text


GPU_FACT = {"node": "gpu-1", "product": "NVIDIA-H100-80GB-HBM3", "count": 8, "memory_mib": 81559,
            "driver_version": "570.124.06", "mig_mode": "Disabled", "family": "hopper", "compute_cap": "9.0",
            "gpu_type": "nvidia-hopper-h100", "products": {"NVIDIA-H100-80GB-HBM3": 8}, "source": "nvidia-smi",
            "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.family": "hopper",
                       "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.count": "8"}}


def test_without_a_cluster_the_gpu_facts_come_from_the_driver_stage(tmp_path):
    hosts = {"gpu-1": {"state": "present", "reason": "ok", "gpu": GPU_FACT},
             "cpu-1": {"state": "no_gpu", "reason": "no NVIDIA device", "gpu": {}}}
    proc, out = run(tmp_path, needed(), gpu_driver_hosts=hosts)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["nodes"] == [GPU_FACT]


def test_driver_present_mode_refuses_a_host_that_needs_a_reboot(tmp_path):
    hosts = {"gpu-1": {"state": "present", "reason": "ok", "gpu": GPU_FACT},
             "gpu-2": {"state": "reboot_required", "reason": "the nouveau module holds the GPU(s)", "gpu": {}}}
    proc, out = run(tmp_path, needed(), gpu_driver_hosts=hosts)
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert ("needs the NVIDIA driver loaded on every GPU host, and the nvidia_driver stage reports: gpu-2 reboot_required "
            "(the nouveau module holds the GPU(s)). Reboot those hosts") in text
    assert "gpu-1" not in text.split("reports:")[1].split(".")[0]
    # Full mode does not need the host driver.
    proc, out = run(tmp_path, needed(mode="operator", driver_os=["ubuntu22.04"]), gpu_driver_hosts=hosts,
                    gpu_mode="operator", gpu_os=["ubuntu22.04"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _all_carried():
    return needed()


@pytest.mark.parametrize("values, text", [
    ({"driver": {"env": [{"name": "MIRROR", "value": "https://download.nvidia.com/x"}]}},
     "ClusterPolicy cluster-policy spec.driver.env[MIRROR].value names https://download.nvidia.com/x, a host outside the site"),
    ({"dcgmExporter": {"imagePullPolicy": "Always"}},
     "ClusterPolicy cluster-policy spec.dcgmExporter.imagePullPolicy is imagePullPolicy: Always"),
    ({"node-feature-discovery": {"master": {"extraArgs": ["--x=https://example.com"]}}},
     "Deployment gpu-operator/gpu-operator-node-feature-discovery-master spec.template.spec.containers[master].args[1] "
     "names https://example.com"),
])
def test_the_egress_audit_refuses_one_bad_value_naming_object_and_field(tmp_path, values, text):
    proc, out = run(tmp_path, _all_carried(), gpu_values=values)
    assert proc.returncode != 0 and out is None
    flat = " ".join(proc.stdout.split())
    assert "the egress audit of the rendered chart found 1 problem(s), nothing was applied: " + text in flat
    assert "Refuse a chart that would reach outside the site" in flat


def test_a_declared_exception_is_printed_and_the_stage_goes_on(tmp_path):
    exc = [{"rule": "pull-always", "object": "ClusterPolicy cluster-policy", "field": "spec.dcgmExporter.imagePullPolicy",
            "reason": "the exporter is rebuilt nightly on site"}]
    proc, out = run(tmp_path, _all_carried(), gpu_values={"dcgmExporter": {"imagePullPolicy": "Always"}}, gpu_exceptions=exc)
    flat = " ".join(proc.stdout.split())
    assert proc.returncode == 0, flat
    assert "gpu_operator: egress audit exception (pull-always): ClusterPolicy cluster-policy spec.dcgmExporter.imagePullPolicy" in flat
    assert "declared: the exporter is rebuilt nightly on site" in flat


def test_a_bundle_without_the_chart_is_refused_by_name(tmp_path):
    proc, _out = run(tmp_path, [], gpu_chart=str(tmp_path / "bundle" / "charts" / "gpu-operator"))
    assert proc.returncode != 0
    out = " ".join(proc.stdout.split())
    assert ("gpu_operator: no GPU operator chart at '%s' (no Chart.yaml there). The bundle carries it as "
            "charts/gpu-operator" % (tmp_path / "bundle" / "charts" / "gpu-operator")) in out, out[-3000:]
    assert not (tmp_path / "gpu.json").exists()
