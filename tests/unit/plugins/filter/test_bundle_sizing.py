"""bundle_sizing: the room a bundle needs at each place, from the spec and declared sizes; and the
refusals a site engineer meets when a size is missing, negative, unreadable or misnamed."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.bundle_sizing import FilterModule, bundle_sizing, parse_size

GB = 1000 ** 3
MIB = 1024 ** 2


def spec():
    return {
        "name": "site",
        "packages": {"image": "docker.io/library/debian:12", "names": ["redis-server"]},
        "images": [{"ref": "docker.io/vllm/vllm-openai:v0.7.3"}, {"ref": "docker.io/library/busybox:1.36"}],
        "charts": [{"name": "llmops-serving", "path": "/c"}],
        "binaries": [{"name": "minio", "url": "https://x", "sha256": "0" * 64}],
        "python": {"enabled": True},
        "models": [{"name": "big", "path": "/m/big"}, {"name": "small", "path": "/m/small"}],
    }


def sizes():
    return {
        "models": {"big": "100 GB", "small": 10 * GB},
        "images": {"docker.io/vllm/vllm-openai:v0.7.3": "9 GB", "docker.io/library/busybox:1.36": "1 GB"},
        "charts": {"llmops-serving": "0.5 GB"},
        "binaries": {"minio": "0.5 GB"},
        "packages": "1 GB",
        "python": "1GB",
    }


def rows(result):
    return {r["place"]: r["bytes"] for r in result["rows"]}


def test_every_place_from_the_declared_sizes():
    out = bundle_sizing(spec(), sizes(), segment_size="1 GB", headroom=0.1)
    assert out["parts"] == {"models": 110 * GB, "images": 10 * GB, "charts": GB // 2, "binaries": GB // 2,
                            "packages": GB, "python": GB}
    assert out["bundle_bytes"] == 123 * GB
    assert rows(out) == {"connected disk": 233 * GB, "media": 123 * GB, "controller": 123 * GB,
                         "registry": 10 * GB, "object store": 110 * GB, "node cache": 110 * GB}
    assert out["segments"] == 123 and out["segment_size"] == GB
    assert [r["recommended"] for r in out["rows"]] == [256300000000, 135300000000, 135300000000,
                                                       11 * GB, 121 * GB, 121 * GB]
    assert out["table"][1] == "connected disk      233.0 GB         256.3 GB  the model checkpoints as downloaded plus the bundle directory"
    assert "media" not in out


def test_a_streamed_model_needs_no_node_cache_and_media_are_counted():
    s = sizes()
    s["medium"] = "64 GB"
    served = [{"name": "a", "checkpoint": {"name": "big"}, "load": "stream"}, {"name": "b", "checkpoint": {"name": "small"}}]
    out = bundle_sizing(spec(), s, serving_models=served, segment_size="4095MiB")
    assert rows(out)["node cache"] == 10 * GB
    assert out["segments"] == 29  # 123e9 / (4095 * 2^20) = 28.6
    assert out["media"] == {"medium_bytes": 64 * GB, "segments_per_medium": 14, "count": 3, "fits": False}
    assert out["table"][-1] == ("a medium of 64.0 GB holds 14 segments: spread the pack over 3 media of this size "
                                "(bundle_medium_size, one run per medium) or use one medium of at least 135.3 GB")
    s["medium"] = "256 GB"
    assert bundle_sizing(spec(), s)["table"][-1] == "one medium of 256.0 GB holds all 29 segments"


def test_an_empty_spec_needs_nothing():
    out = bundle_sizing({}, {})
    assert out["bundle_bytes"] == 0 and out["segments"] == 0 and set(rows(out).values()) == {0}


@pytest.mark.parametrize("value, expected", [
    (5, 5), ("5", 5), ("16.1 GB", 16100000000), ("4095MiB", 4095 * MIB), ("1 TiB", 1024 ** 4), ("100 kB", 100000),
    ("2 B", 2), (0, 0),
])
def test_sizes_in_bytes_or_with_a_unit(value, expected):
    assert parse_size(value, "x") == expected


def test_a_missing_size_names_every_missing_entry_and_the_fix():
    s = sizes()
    del s["models"]["big"]
    del s["images"]["docker.io/library/busybox:1.36"]
    del s["python"]
    with pytest.raises(AnsibleFilterError) as e:
        bundle_sizing(spec(), s)
    assert str(e.value) == (
        "bundle_sizing: no size declared for llmops_bundle_sizes.models[big], "
        "llmops_bundle_sizes.images[docker.io/library/busybox:1.36], llmops_bundle_sizes.python. Declare each in "
        "llmops_bundle_sizes, beside bundle_spec (bytes or a number with a unit; du -sb <checkpoint> for a model, the sum "
        "of the layer sizes of skopeo inspect --raw for an image)")


@pytest.mark.parametrize("value, shown", [(-1, "-1"), ("-16 GB", "-16 GB"), (-0.5, "-0.5")])
def test_a_negative_size_is_refused(value, shown):
    s = sizes()
    s["models"]["small"] = value
    with pytest.raises(AnsibleFilterError) as e:
        bundle_sizing(spec(), s)
    assert str(e.value) == "bundle_sizing: llmops_bundle_sizes.models[small] is %s: a size cannot be negative" % shown


@pytest.mark.parametrize("value, message", [
    ("lots", "bundle_sizing: llmops_bundle_sizes.packages is 'lots', not a size: give bytes (an integer) or a number "
             "with a unit, such as 16.1 GB or 4095 MiB"),
    ("16 GiG", "bundle_sizing: llmops_bundle_sizes.packages is '16 GiG': unknown unit 'GiG' (use B, kB, MB, GB, TB, "
               "KiB, MiB, GiB or TiB)"),
    (None, "bundle_sizing: llmops_bundle_sizes.packages is None, not a size: give bytes (an integer) or a number with "
           "a unit, such as 16.1 GB or 4095 MiB"),
    (float("inf"), "bundle_sizing: llmops_bundle_sizes.packages is inf, not a size: give bytes (an integer) or a number "
                   "with a unit, such as 16.1 GB or 4095 MiB"),
    (True, "bundle_sizing: llmops_bundle_sizes.packages is True, not a size: give bytes (an integer) or a number with "
           "a unit, such as 16.1 GB or 4095 MiB"),
])
def test_an_unreadable_size_is_refused(value, message):
    s = sizes()
    s["packages"] = value
    with pytest.raises(AnsibleFilterError) as e:
        bundle_sizing(spec(), s)
    assert str(e.value) == message


def test_a_size_for_something_the_spec_does_not_name_is_a_typo():
    s = sizes()
    s["models"]["bigg"] = "1 GB"
    with pytest.raises(AnsibleFilterError) as e:
        bundle_sizing(spec(), s)
    assert str(e.value) == ("bundle_sizing: llmops_bundle_sizes.models[bigg] declared but bundle_spec does not name it: "
                            "fix the name (a typo?) or remove the size")


def test_unknown_keys_and_wrong_shapes_are_refused():
    with pytest.raises(AnsibleFilterError) as e:
        bundle_sizing(spec(), dict(sizes(), model={"big": 1}))
    assert str(e.value) == ("bundle_sizing: llmops_bundle_sizes has unknown key(s) model; the keys are binaries, charts, "
                            "images, medium, models, packages, python")
    with pytest.raises(AnsibleFilterError) as e:
        bundle_sizing(spec(), dict(sizes(), models=["big"]))
    assert str(e.value) == "bundle_sizing: llmops_bundle_sizes.models must map each model to a size, got list"
    with pytest.raises(AnsibleFilterError) as e:
        bundle_sizing(spec(), "100 GB")
    assert str(e.value) == ("bundle_sizing: llmops_bundle_sizes must be a dict (models, images, charts, binaries, packages, "
                            "python, medium), got str")
    with pytest.raises(AnsibleFilterError) as e:
        bundle_sizing(spec(), sizes(), segment_size=0)
    assert str(e.value) == "bundle_sizing: bundle_segment_size is 0: it must be more than 0"
    with pytest.raises(AnsibleFilterError) as e:
        bundle_sizing(spec(), sizes(), headroom=-0.1)
    assert str(e.value) == "bundle_sizing: headroom is -0.1: it must be 0 or more (0.1 adds 10%)"


def test_registered_as_a_filter():
    assert FilterModule().filters()["bundle_sizing"] is bundle_sizing
