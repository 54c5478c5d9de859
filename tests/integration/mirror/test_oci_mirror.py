"""llmops.onprem.oci_mirror against a real registry (Debian's docker-registry, TLS, htpasswd):
check mode predicts, the first push moves each blob once (shared layers mounted), the second moves
nothing, an interrupted 1 GiB upload resumes from the registry's offset, a corrupt blob and a wrong
password are refused with nothing pushed."""
import json
import os
import signal
import time
import uuid

import mirror_layouts as L

MiB = 1 << 20


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def three_images(layout, ns):
    """Three images over four layers: base is shared by all, mid by two; one named by a docker.io short name."""
    base = L.layer(layout, 3 * MiB, ns + "base")
    mid = L.layer(layout, 2 * MiB, ns + "mid")
    a = L.layer(layout, 1 * MiB, ns + "a")
    b = L.layer(layout, 512 * 1024, ns + "b")
    refs = {
        "public.ecr.aws/%s/model-engine:v1" % ns: [base, mid, a],
        "public.ecr.aws/%s/vllm:v0.6.3" % ns: [base, mid],
        "%s/tool:1.0" % ns: [base, b],
    }
    descs = dict((ref, L.image(layout, ref, layers)) for ref, layers in refs.items())
    return refs, descs, (base, mid, a, b)


def test_first_push_then_nothing_moves(tmp_path, registry, mirror):
    ns = unique("m1")
    layout = str(tmp_path / "layout")
    refs, descs, (base, mid, a, b) = three_images(layout, ns)
    layer_bytes = sum(x["size"] for x in (base, mid, a, b))
    args = registry.module_args(layout, progress_file=str(tmp_path / "progress.json"), state_dir=str(tmp_path / "state"))

    rc, check = mirror(args, check_mode=True)
    assert rc == 0, check.get("msg", check)
    assert check["changed"] is True
    assert check["blobs_uploaded"] == 4 + 3  # four layers and three configs, each once
    assert check["bytes_moved"] == 0
    assert check["diff"] == {"before": {"images": []}, "after": {"images": sorted(
        "%s/%s" % (registry.host, ("docker.io/" + r) if r.startswith(ns) else r) for r in refs)}}
    assert registry.manifest_digest("public.ecr.aws/%s/vllm" % ns, "v0.6.3") is None, "check mode pushed something"

    rc, first = mirror(args)
    assert rc == 0, first.get("msg", first)
    assert first["changed"] is True
    # Check mode predicted the real run exactly.
    for key in ("bytes_total", "blobs_uploaded", "blobs_mounted", "blobs_present", "images", "diff"):
        assert first[key] == check[key], key
    assert first["bytes_moved"] == first["bytes_total"]
    assert layer_bytes < first["bytes_total"] < layer_bytes + 10000  # layers once (+ three small configs)
    assert first["blobs_mounted"] == 2 + 1  # base uploaded once and mounted into two repositories, mid into one
    assert first["resumed"] == [] and first["restarted"] == []
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["phase"] == "done" and progress["bytes_done"] == progress["bytes_total"] == first["bytes_total"]

    # Every image is in the registry under the site_image name, with the layout's manifest digest.
    for ref, desc in descs.items():
        repo = ("docker.io/" + ref if ref.startswith(ns) else ref).rsplit(":", 1)[0]
        assert registry.manifest_digest(repo, ref.rsplit(":", 1)[1]) == desc["digest"], ref
    assert registry.has_blob("docker.io/%s/tool" % ns, base["digest"])

    rc, second = mirror(args)
    assert rc == 0, second.get("msg", second)
    assert second["changed"] is False
    assert (second["bytes_total"], second["bytes_moved"], second["blobs_uploaded"], second["blobs_mounted"]) == (0, 0, 0, 0)
    assert [i["action"] for i in second["images"]] == ["none"] * 3
    assert second["diff"]["before"] == second["diff"]["after"]

    rc, again = mirror(args, check_mode=True)
    assert rc == 0 and again["changed"] is False and again["bytes_total"] == 0


def test_check_mode_predicts_a_partial_push(tmp_path, registry, mirror):
    """One image is already there; a second one shares its base: check mode predicts the mount and the bytes."""
    ns = unique("m2")
    layout = str(tmp_path / "layout")
    base = L.layer(layout, 2 * MiB, ns + "base")
    top = L.layer(layout, 1 * MiB, ns + "top")
    first_ref, second_ref = "quay.io/%s/one:1" % ns, "ghcr.io/%s/two:2" % ns
    L.image(layout, first_ref, [base])
    args = registry.module_args(layout, state_dir=str(tmp_path / "state"))
    assert mirror(args)[0] == 0
    L.image(layout, second_ref, [base, top])

    rc, check = mirror(args, check_mode=True)
    assert rc == 0, check.get("msg", check)
    assert [(i["source"], i["action"]) for i in check["images"]] == [(second_ref, "push"), (first_ref, "none")]
    assert check["blobs_mounted"] == 1 and check["blobs_uploaded"] == 2  # base mounted; top and the config uploaded
    assert top["size"] < check["bytes_total"] < top["size"] + 2000
    rc, real = mirror(args)
    assert rc == 0, real.get("msg", real)
    assert (real["bytes_total"], real["bytes_moved"], real["blobs_uploaded"], real["blobs_mounted"]) == (
        check["bytes_total"], check["bytes_total"], check["blobs_uploaded"], check["blobs_mounted"])
    assert registry.has_blob("ghcr.io/%s/two" % ns, base["digest"])


def test_interrupted_large_upload_resumes_from_the_registry_offset(tmp_path, registry, mirror, mirror_popen):
    ns = unique("m3")
    layout = str(tmp_path / "layout")
    big = L.layer(layout, 1 << 30, ns + "big")
    small = L.layer(layout, 1 * MiB, ns + "small")
    ref = "nvcr.io/%s/big:1" % ns
    desc = L.image(layout, ref, [small, big])
    progress = tmp_path / "progress.json"
    args = registry.module_args(layout, progress_file=str(progress), state_dir=str(tmp_path / "state"),
                                chunk_size=64, parallel=2)

    proc = mirror_popen(args)
    deadline = time.monotonic() + 600
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done = json.loads(progress.read_text())["bytes_done"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= 300 * MiB:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the push ended before it could be interrupted: %s" % (proc.communicate(),)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    failed = json.loads(out)
    assert failed["failed"] is True and failed["error_kind"] == "interrupted"
    assert "interrupted: blob %s stopped at " % big["digest"] in failed["msg"]
    assert "run again to resume" in failed["msg"]
    stopped_at = int(failed["msg"].split("stopped at ")[1].split()[0])
    assert stopped_at >= 300 * MiB and stopped_at % (64 * MiB) == 0
    assert registry.manifest_digest("nvcr.io/%s/big" % ns, "1") is None

    rc, resumed = mirror(args)
    assert rc == 0, resumed.get("msg", resumed)
    assert resumed["resumed"] == [{"digest": big["digest"], "repository": "nvcr.io/%s/big" % ns, "offset": stopped_at}]
    assert resumed["restarted"] == []
    # Only what was missing moved: the rest of the big layer (the small blobs finished before the stop).
    assert resumed["bytes_moved"] == big["size"] - stopped_at
    assert resumed["bytes_moved"] < resumed["bytes_total"]
    assert registry.manifest_digest("nvcr.io/%s/big" % ns, "1") == desc["digest"]
    assert registry.has_blob("nvcr.io/%s/big" % ns, big["digest"])
    assert os.listdir(tmp_path / "state") == [], "resume records left behind"


def test_corrupt_blob_is_refused_with_its_digest_and_nothing_is_pushed(tmp_path, registry, mirror):
    ns = unique("m4")
    layout = str(tmp_path / "layout")
    good = L.layer(layout, 1 * MiB, ns + "good")
    bad = L.layer(layout, 1 * MiB, ns + "bad")
    L.image(layout, "registry.k8s.io/%s/app:1" % ns, [good, bad])
    path = L.blob_path(layout, bad["digest"])
    with open(path, "r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    rc, result = mirror(registry.module_args(layout, state_dir=str(tmp_path / "state")))
    assert rc == 1
    assert result["msg"].startswith("blob %s in %s is corrupt: its content hashes to sha256:" % (bad["digest"], layout))
    assert result["error_kind"] == "corrupt"
    repo = "registry.k8s.io/%s/app" % ns
    assert not registry.has_blob(repo, good["digest"]) and not registry.has_blob(repo, bad["digest"])
    assert registry.manifest_digest(repo, "1") is None


def test_wrong_password_is_refused_with_a_clear_message(tmp_path, registry, mirror):
    ns = unique("m5")
    layout = str(tmp_path / "layout")
    L.image(layout, "docker.io/%s/app:1" % ns, [L.layer(layout, 4096, ns)])
    args = registry.module_args(layout, password="not-the-password")
    rc, result = mirror(args)
    assert rc == 1
    assert result["msg"] == ("the registry %s refused the credentials of user 'pusher' (HTTP 401 on GET /v2/): "
                             "check the user name and password" % registry.host)
    assert "not-the-password" not in json.dumps(result)
    assert registry.manifest_digest("docker.io/%s/app" % ns, "1") is None


def test_unknown_image_and_untrusted_certificate(tmp_path, registry, mirror):
    ns = unique("m6")
    layout = str(tmp_path / "layout")
    L.image(layout, "docker.io/%s/app:1" % ns, [L.layer(layout, 4096, ns)])
    rc, result = mirror(registry.module_args(layout, images=["docker.io/%s/other:1" % ns]))
    assert rc == 1
    assert result["msg"] == "image(s) not in the layout %s: docker.io/%s/other:1 (it holds: docker.io/%s/app:1)" % (
        layout, ns, ns)
    rc, result = mirror(registry.module_args(layout, ca_path=None))
    assert rc == 1 and result["error_kind"] == "tls"
    assert result["msg"].startswith("TLS verification of https://%s failed: " % registry.host)
    assert "give the site CA (ca_path)" in result["msg"]
