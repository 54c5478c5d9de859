"""bundle_images with the real skopeo: images land in one OCI layout named by their upstream
reference and pinned to digests; a re-run copies nothing; a reference whose source changed is
re-pinned and the old manifest and blobs leave the bundle; an image dropped from the spec leaves
it too; latest/untagged references are refused before anything is copied."""
import json
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ANSIBLE = os.path.join(REPO, ".venv", "bin", "ansible")
MKIMAGE = os.path.join(REPO, "serving", "images", "mkimage.py")


def image(tmp, name, content):
    d = tmp / ("src-" + name)
    d.mkdir()
    (d / "data.txt").write_text(content)
    out = tmp / (name + ".tar")
    subprocess.run(["python3", MKIMAGE, "--tag", "localhost/%s:1" % name, "--add", "%s/:/app" % d, "--output", str(out)],
                   check=True, capture_output=True)
    return "oci-archive:%s" % out


def run(layout, images, check=False):
    args = json.dumps({"layout": str(layout), "images": images})
    cmd = [ANSIBLE, "localhost", "-m", "llmops.onprem.bundle_images", "-a", args, "-o"] + (["--check"] if check else [])
    p = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO,
                       env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg")))
    line = [x for x in (p.stdout + p.stderr).splitlines() if "=>" in x][-1]
    return p.returncode, json.loads(line.split("=>", 1)[1])


def blobs(layout):
    return set(os.listdir(str(layout / "blobs" / "sha256")))


def test_layout_is_pinned_idempotent_and_holds_exactly_the_spec(tmp_path):
    layout = tmp_path / "bundle" / "images"
    a, b = image(tmp_path, "a", "one"), image(tmp_path, "b", "two")
    spec = [{"ref": "registry.example.org/app/a:1.0", "source": a}, {"ref": "registry.example.org/app/b:1.0", "source": b}]
    rc, res = run(layout, spec, check=True)
    assert rc == 0 and res["changed"] and sorted(res["copied"]) == sorted(i["ref"] for i in spec) and not layout.exists()
    rc, res = run(layout, spec)
    assert rc == 0 and res["changed"] and all(i["digest"].startswith("sha256:") for i in res["images"])
    index = json.loads((layout / "index.json").read_text())
    assert sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]) == sorted(i["ref"] for i in spec)
    rc, res = run(layout, spec)
    assert rc == 0 and res["changed"] is False and res["copied"] == []

    # a's source changes: re-pinned, and its old manifest and layer leave the layout
    before = blobs(layout)
    old_a = [i["digest"] for i in res["images"] if i["ref"].endswith("/a:1.0")][0]
    spec[0]["source"] = image(tmp_path, "a2", "one, rebuilt")
    rc, res = run(layout, spec)
    new_a = [i["digest"] for i in res["images"] if i["ref"].endswith("/a:1.0")][0]
    assert rc == 0 and res["copied"] == ["registry.example.org/app/a:1.0"] and new_a != old_a
    assert old_a.split(":")[1] not in blobs(layout) and res["blobs_removed"] >= 2
    index = json.loads((layout / "index.json").read_text())
    assert len(index["manifests"]) == 2 and all(m.get("annotations") for m in index["manifests"])

    # b leaves the spec: it leaves the layout, and every remaining blob is a's
    rc, res = run(layout, spec[:1])
    assert rc == 0 and res["changed"] and res["removed"] == ["registry.example.org/app/b:1.0"]
    index = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [new_a]
    assert len(blobs(layout)) == 3 and blobs(layout) < before | blobs(layout)  # manifest, config, one layer


def test_latest_and_untagged_refused_before_copying(tmp_path):
    layout = tmp_path / "images"
    src = image(tmp_path, "c", "x")
    rc, res = run(layout, [{"ref": "docker.io/library/busybox:latest", "source": src}, {"ref": "docker.io/library/nginx", "source": src}])
    assert rc != 0
    assert res["msg"] == ("docker.io/library/busybox:latest uses the tag latest, which changes under you: pin a version tag or a digest; "
                          "docker.io/library/nginx has no tag: pin it with a tag (not latest) or a digest")
    assert not layout.exists()
