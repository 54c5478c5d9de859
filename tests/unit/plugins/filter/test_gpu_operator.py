"""gpu_operator_values, gpu_operator_images and missing_images: the GPU operator chart's images
read from the chart's own values (a small chart written by the test, shaped like the real one;
tests/integration/gpu renders the real chart), the site registry mapping, and the bundle check."""
import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.gpu_operator_images import FilterModule as ImagesFilters
from ansible_collections.llmops.onprem.plugins.filter.gpu_operator_images import gpu_operator_images
from ansible_collections.llmops.onprem.plugins.filter.gpu_operator_values import gpu_operator_values
from ansible_collections.llmops.onprem.plugins.filter.missing_images import missing_images

REG = "registry.site.example:5000"
DIGEST = "sha256:" + "cd" * 32


def chart(tmp_path, **changes):
    values = {
        "nfd": {"enabled": True},
        "sandboxWorkloads": {"enabled": False},
        "gpuCluster": {"deployCR": False},
        "operator": {"repository": "nvcr.io/nvidia", "image": "gpu-operator"},
        "validator": {"repository": "nvcr.io/nvidia", "image": "gpu-operator"},
        "driver": {"enabled": True, "repository": "nvcr.io/nvidia", "image": "driver", "version": "580.1",
                   "manager": {"repository": "nvcr.io/nvidia/cloud-native", "image": "k8s-driver-manager",
                               "version": "v0.9.0"}},
        "toolkit": {"enabled": True, "repository": "nvcr.io/nvidia/k8s", "image": "container-toolkit", "version": "v1.1"},
        "devicePlugin": {"enabled": True, "repository": "nvcr.io/nvidia", "image": "k8s-device-plugin", "version": "v0.2"},
        "gfd": {"enabled": True, "repository": "nvcr.io/nvidia", "image": "k8s-device-plugin", "version": "v0.2"},
        "dcgm": {"enabled": False, "repository": "nvcr.io/nvidia/cloud-native", "image": "dcgm", "version": "4.0"},
        "futureThing": {"enabled": True, "repository": "nvcr.io/nvidia/cloud-native", "image": "future", "version": "v1"},
        "vgpuManager": {"enabled": False, "repository": "", "image": "vgpu-manager", "version": ""},
        "sandboxDevicePlugin": {"enabled": True, "repository": "nvcr.io/nvidia", "image": "kubevirt-plugin",
                                "version": "v1.0"},
        "draDriver": {"repository": "nvcr.io/nvidia", "image": "dra-driver", "version": "v0.5.0"},
        "node-feature-discovery": {"worker": {"config": {}}},
    }
    for path, value in changes.items():
        node = values
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    d = tmp_path / "gpu-operator"
    (d / "charts" / "node-feature-discovery").mkdir(parents=True)
    (d / "Chart.yaml").write_text(yaml.safe_dump(dict(name="gpu-operator", version="v9.1.0", appVersion="v9.1.0")))
    (d / "values.yaml").write_text(yaml.safe_dump(values))
    nfd = d / "charts" / "node-feature-discovery"
    (nfd / "Chart.yaml").write_text(yaml.safe_dump(dict(name="node-feature-discovery", version="0.9.0", appVersion="v0.9.0")))
    (nfd / "values.yaml").write_text(yaml.safe_dump(dict(image=dict(repository="registry.k8s.io/nfd/node-feature-discovery",
                                                                    tag=None))))
    return str(d)


def refs(chart_dir, **kw):
    return [d["ref"] for d in gpu_operator_images(chart_dir, **kw)]


def test_host_mode_lists_the_running_components_from_the_values(tmp_path):
    assert refs(chart(tmp_path)) == [
        "nvcr.io/nvidia/k8s-device-plugin:v0.2",            # devicePlugin and gfd: one image
        "nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.9.0",  # named by the operator's Deployment, always
        "nvcr.io/nvidia/cloud-native/future:v1",            # a component the filter has never heard of
        "registry.k8s.io/nfd/node-feature-discovery:v0.9.0",  # the subchart's appVersion
        "nvcr.io/nvidia/gpu-operator:v9.1.0",               # operator and validator: the chart's appVersion
        "nvcr.io/nvidia/k8s/container-toolkit:v1.1",
    ]


def test_switched_off_components_are_not_listed(tmp_path):
    out = refs(chart(tmp_path, toolkit__enabled=False, futureThing__enabled=False, nfd__enabled=False), toolkit=True,
               overrides={"toolkit": {"enabled": False}})
    assert "nvcr.io/nvidia/k8s/container-toolkit:v1.1" not in out
    assert "nvcr.io/nvidia/cloud-native/future:v1" not in out
    assert not [r for r in out if "node-feature-discovery" in r]
    # dcgm is off, the sandbox and DRA stacks are off, the driver is off in host mode.
    assert not [r for r in out if "/dcgm:" in r or "kubevirt" in r or "dra-driver" in r or "/driver" in r]
    # toolkit=false (the hosts bring the toolkit) drops it too.
    assert "nvcr.io/nvidia/k8s/container-toolkit:v1.1" not in refs(chart(tmp_path / "b"), toolkit=False)


def test_full_mode_lists_the_driver_per_node_os_and_its_manager(tmp_path):
    out = refs(chart(tmp_path), mode="operator", driver_os=["ubuntu22.04", "rhel9.4"])
    assert "nvcr.io/nvidia/driver:580.1-rhel9.4" in out and "nvcr.io/nvidia/driver:580.1-ubuntu22.04" in out
    assert "nvcr.io/nvidia/driver:580.1" not in out
    assert "nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.9.0" in out


def test_stacks_switched_on_bring_their_images(tmp_path):
    out = refs(chart(tmp_path), overrides={"sandboxWorkloads": {"enabled": True}, "gpuCluster": {"deployCR": True}})
    assert "nvcr.io/nvidia/kubevirt-plugin:v1.0" in out and "nvcr.io/nvidia/dra-driver:v0.5.0" in out


def test_values_point_every_image_at_the_site_registry_with_its_version(tmp_path):
    v = gpu_operator_values(chart(tmp_path), REG)
    assert v["driver"]["enabled"] is False and v["toolkit"]["enabled"] is True
    assert v["operator"] == {"repository": REG + "/nvcr.io/nvidia", "version": "v9.1.0"}
    assert v["validator"] == {"repository": REG + "/nvcr.io/nvidia", "version": "v9.1.0"}
    assert v["driver"]["manager"] == {"repository": REG + "/nvcr.io/nvidia/cloud-native", "version": "v0.9.0"}
    # Switched-off components point at the site too: switching one on later cannot reach out.
    assert v["dcgm"]["repository"] == REG + "/nvcr.io/nvidia/cloud-native"
    assert v["sandboxDevicePlugin"]["repository"] == REG + "/nvcr.io/nvidia"
    assert v["node-feature-discovery"]["image"] == {"repository": REG + "/registry.k8s.io/nfd/node-feature-discovery",
                                                    "tag": "v0.9.0"}
    assert "repository" not in v.get("vgpuManager", {})  # the site's own image: nothing to point anywhere


def test_overrides_are_kept_and_their_images_mapped(tmp_path):
    overrides = {"toolkit": {"repository": "quay.io/corp", "version": "v2"}, "migManager": {"enabled": False},
                 "cdi": {"enabled": False}}
    v = gpu_operator_values(chart(tmp_path), REG, overrides=overrides)
    assert v["toolkit"]["repository"] == REG + "/quay.io/corp" and v["toolkit"]["version"] == "v2"
    assert v["migManager"] == {"enabled": False} and v["cdi"] == {"enabled": False}


def test_a_digest_version_keeps_its_at(tmp_path):
    c = chart(tmp_path, toolkit__version=DIGEST)
    assert "nvcr.io/nvidia/k8s/container-toolkit@" + DIGEST in refs(c)
    assert gpu_operator_values(c, REG)["toolkit"]["version"] == DIGEST


def test_empty_registry_leaves_the_upstream_repositories(tmp_path):
    assert gpu_operator_values(chart(tmp_path), "")["toolkit"]["repository"] == "nvcr.io/nvidia/k8s"


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="full"), "driver mode must be one of host, operator, got 'full'"),
    (dict(mode="operator"), "driver runs in the cluster (mode operator) and its image tag ends in the nodes' OS "
                            "(580.1-<os>); set gpu_operator_driver_os"),
    (dict(overrides={"driver": {"enabled": True}}), "driver mode 'host' (the driver on the host, from the nvidia_driver "
                                                    "stage) contradicts gpu_operator_values driver.enabled: true"),
    (dict(mode="operator", driver_os=["ubuntu22.04"], overrides={"driver": {"usePrecompiled": True}}),
     "driver.usePrecompiled is not supported"),
    (dict(overrides={"toolkit": {"version": "latest"}}), "toolkit uses the tag 'latest'"),
    (dict(overrides={"sandboxWorkloads": {"enabled": True}, "vgpuManager": {"enabled": True}}),
     "vgpuManager is enabled but has no repository/image in the chart values"),
])
def test_bad_settings_are_refused_naming_the_fix(tmp_path, kwargs, message):
    c = chart(tmp_path)
    with pytest.raises(AnsibleFilterError) as e:
        gpu_operator_images(c, **kwargs)
    assert message in str(e.value)
    with pytest.raises(AnsibleFilterError) as e:
        gpu_operator_values(c, REG, **kwargs)
    assert message in str(e.value)


def test_not_the_gpu_operator_chart(tmp_path):
    d = tmp_path / "other"
    d.mkdir()
    with pytest.raises(AnsibleFilterError, match="Chart.yaml is missing: the chart directory must be the GPU operator chart"):
        gpu_operator_images(str(d))
    (d / "Chart.yaml").write_text("name: redis\n")
    (d / "values.yaml").write_text("{}\n")
    with pytest.raises(AnsibleFilterError, match="is the chart 'redis', not gpu-operator"):
        gpu_operator_images(str(d))


def test_images_fit_the_bundle_spec(tmp_path):
    out = gpu_operator_images(chart(tmp_path))
    assert all(sorted(d) == ["ref"] for d in out)
    assert ImagesFilters().filters()["gpu_operator_images"] is gpu_operator_images


def test_missing_images_against_lists_and_an_oci_index():
    needed = ["nvcr.io/nvidia/a:v1", "nvcr.io/nvidia/b:v2", "nginx:1.25"]
    assert missing_images(needed, []) == needed
    assert missing_images(needed, [{"ref": "nvcr.io/nvidia/a:v1"}, "docker.io/library/nginx:1.25"]) == ["nvcr.io/nvidia/b:v2"]
    index = {"manifests": [{"annotations": {"org.opencontainers.image.ref.name": "nvcr.io/nvidia/b:v2@" + DIGEST}},
                           {"annotations": {}}, {}]}
    assert missing_images(needed, index) == ["nvcr.io/nvidia/a:v1", "nginx:1.25"]
    # Same name, another tag is still missing.
    assert missing_images(["nvcr.io/nvidia/a:v1"], ["nvcr.io/nvidia/a:v2"]) == ["nvcr.io/nvidia/a:v1"]


def test_missing_images_bad_input():
    with pytest.raises(AnsibleFilterError, match=r"missing_images: available entries must be references or \{ref\} dicts"):
        missing_images(["a:1"], [3])
    with pytest.raises(AnsibleFilterError, match="missing_images: image reference .a:b:c. has an invalid repository"):
        missing_images(["a:b:c"], [])
