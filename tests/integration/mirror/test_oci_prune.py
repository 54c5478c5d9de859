"""llmops.onprem.oci_prune against a real registry (Debian's docker-registry, TLS, htpasswd, deletes enabled): after
a second bundle's push, the manifests the first one pushed and the second no longer names are deleted (check mode
lists them first and deletes nothing), a manifest another tag points at is kept and named, a second run finds nothing
to do, and the registry's garbage collection then frees the old image's own layer and keeps the shared one. Bad
references are refused before anything is deleted."""
import json
import os
import subprocess
import sys
import uuid

import mirror_layouts as L
import pytest
from conftest import MODULE, _env, write_args

PRUNE = MODULE.parent / "oci_prune.py"
MiB = 1 << 20


@pytest.fixture(scope="module")
def registry(own_registry):
    return own_registry


def prune(tmp_path, args, check_mode=False):
    p = subprocess.run([sys.executable, str(PRUNE), str(write_args(tmp_path, args, check_mode))],
                       capture_output=True, text=True, env=_env(), check=False)
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        raise AssertionError("module printed no JSON (rc %d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr))


def blob_on_disk(registry, digest):
    algo, hexd = digest.split(":", 1)
    return (registry.dir / "storage" / "docker" / "registry" / "v2" / "blobs" / algo / hexd[:2] / hexd / "data").exists()


def test_an_upgrade_removes_what_the_old_bundle_pushed_and_the_new_one_does_not_name(tmp_path, registry, mirror):
    ns = "prune-" + uuid.uuid4().hex[:8]
    base = L.layer(str(tmp_path / "l1"), 2 * MiB, ns + "base")
    # Bundle 1: app:v1 (base + its own layer), tool:1 (base + its own), old:1 (to be tagged by someone else too).
    l1 = str(tmp_path / "l1")
    a1 = L.layer(l1, 1 * MiB, ns + "a1")
    t1 = L.layer(l1, 512 * 1024, ns + "t1")
    o1 = L.layer(l1, 256 * 1024, ns + "o1")
    L.image(l1, "public.ecr.aws/%s/app:v1" % ns, [base, a1])
    L.image(l1, "public.ecr.aws/%s/tool:1" % ns, [base, t1])
    L.image(l1, "public.ecr.aws/%s/old:1" % ns, [o1])
    rc, first = mirror(registry.module_args(l1, state_dir=str(tmp_path / "state")))
    assert rc == 0, first.get("msg", first)
    # What the image_mirror stage records (llmops_site.image_mirror.pushed): each target with its manifest digest.
    pushed1 = sorted("%s@%s" % (i["target"], i["digest"]) for i in first["images"])
    # Someone else tags old:1's manifest as old:theirs: the collection never pushed that tag.
    old_repo = "public.ecr.aws/%s/old" % ns
    media = registry.api("GET", "/v2/%s/manifests/1" % old_repo, headers={"Accept": L.OCI_MANIFEST})
    assert registry.api("PUT", "/v2/%s/manifests/theirs" % old_repo, user="pusher", data=media.content,
                        headers={"Content-Type": L.OCI_MANIFEST}).status_code == 201

    # Bundle 2: app:v2 (a new own layer on the same base), tool:1 unchanged; old:1 gone.
    l2 = str(tmp_path / "l2")
    L.layer(l2, 2 * MiB, ns + "base")
    a2 = L.layer(l2, 1 * MiB, ns + "a2")
    t1b = L.layer(l2, 512 * 1024, ns + "t1")
    L.image(l2, "public.ecr.aws/%s/app:v2" % ns, [base, a2])
    L.image(l2, "public.ecr.aws/%s/tool:1" % ns, [base, t1b])
    rc, second = mirror(registry.module_args(l2, state_dir=str(tmp_path / "state")))
    assert rc == 0, second.get("msg", second)
    pushed2 = sorted("%s@%s" % (i["target"], i["digest"]) for i in second["images"])
    app_v1 = [r for r in pushed1 if "/app:v1@" in r][0].split("@", 1)[1]
    app_v2 = [r for r in pushed2 if "/app:v2@" in r][0].split("@", 1)[1]
    app_repo = "public.ecr.aws/%s/app" % ns
    args = dict(registry=registry.host, images=pushed1, keep=pushed2, username="pusher",
                password=registry.passwords["pusher"], ca_path=registry.ca)

    rc, check = prune(tmp_path, args, check_mode=True)
    assert rc == 0, check
    assert check["changed"] is True and check["removed"] == ["%s@%s" % (app_repo, app_v1)], check
    kept = dict((k["manifest"].split("@")[0], k["why"]) for k in check["kept"])
    assert kept == {"public.ecr.aws/%s/tool" % ns: "an image of keep uses it",
                    old_repo: "tag(s) theirs, which this collection did not push, point at it"}, check["kept"]
    assert registry.manifest_digest(app_repo, app_v1) == app_v1, "check mode deleted something"

    rc, run = prune(tmp_path, args)
    assert rc == 0, run
    assert (run["changed"], run["removed"], run["kept"]) == (True, check["removed"], check["kept"])
    assert registry.manifest_digest(app_repo, app_v1) is None and registry.manifest_digest(app_repo, "v1") is None
    assert registry.manifest_digest(app_repo, "v2") == app_v2
    assert registry.manifest_digest(old_repo, "theirs") and registry.manifest_digest("public.ecr.aws/%s/tool" % ns, "1")

    rc, again = prune(tmp_path, args)
    assert rc == 0 and again["changed"] is False and again["removed"] == [], again
    assert again["absent"] == ["%s@%s" % (app_repo, app_v1)]

    # The registry's garbage collection (what the registry stage runs after a prune) frees app:v1's own layer; the
    # layers the kept images share stay.
    assert blob_on_disk(registry, a1["digest"])
    gc = subprocess.run(["docker-registry", "garbage-collect", str(registry.dir / "config.yml")],
                        capture_output=True, text=True, check=False)
    assert gc.returncode == 0, gc.stdout[-2000:] + gc.stderr[-2000:]
    assert not blob_on_disk(registry, a1["digest"])
    assert blob_on_disk(registry, base["digest"]) and blob_on_disk(registry, a2["digest"])
    assert registry.api("GET", "/v2/%s/manifests/v2" % app_repo, headers={"Accept": L.OCI_MANIFEST}).status_code == 200


def test_a_reference_outside_the_site_registry_or_without_digest_is_refused_before_anything_is_deleted(tmp_path, registry):
    args = dict(registry=registry.host, username="pusher", password=registry.passwords["pusher"], ca_path=registry.ca)
    rc, out = prune(tmp_path, dict(args, images=["registry.other.example:5000/x/app:1@sha256:" + "a" * 64]))
    assert rc != 0 and out["msg"] == ("oci_prune: images names registry.other.example:5000/x/app:1@sha256:%s, which is "
                                      "not in the site registry %s: nothing was removed" % ("a" * 64, registry.host))
    rc, out = prune(tmp_path, dict(args, images=["%s/x/app:1" % registry.host]))
    assert rc != 0 and "names %s/x/app:1 without a digest" % registry.host in out["msg"], out
    rc, out = prune(tmp_path, dict(args, images=[], keep=["%s/x/app:1" % registry.host]))
    assert rc != 0 and "keep names" in out["msg"], out
    assert os.path.isdir(registry.dir / "storage")


def index_image(layout, ref, children):
    """Add an image index named `ref` with one child manifest per (architecture, layers); returns the child
    descriptors and the index's."""
    kids = []
    for arch, layers in children:
        tmp_ref = "tmp.invalid/child/%s:%s" % (uuid.uuid4().hex[:8], arch)
        kids.append(dict(L.image(layout, tmp_ref, layers, cmd=[arch]), platform={"architecture": arch, "os": "linux"}))
    idx = {"schemaVersion": 2, "mediaType": L.OCI_INDEX, "manifests": kids}
    desc = dict(L.put_bytes(layout, json.dumps(idx, sort_keys=True).encode()), mediaType=L.OCI_INDEX)
    path = os.path.join(layout, "index.json")
    with open(path) as f:
        top = json.load(f)
    top["manifests"] = [m for m in top["manifests"] if not m["annotations"]["org.opencontainers.image.ref.name"]
                        .startswith("tmp.invalid/")] + [dict(desc, annotations={"org.opencontainers.image.ref.name": ref})]
    with open(path, "w") as f:
        json.dump(top, f)
    return kids, desc


def test_an_old_index_goes_with_the_children_no_kept_index_uses(tmp_path, registry, mirror):
    ns = "prune-idx-" + uuid.uuid4().hex[:8]
    ref1, ref2 = "public.ecr.aws/%s/multi:1" % ns, "public.ecr.aws/%s/multi:2" % ns
    l1, l2 = str(tmp_path / "l1"), str(tmp_path / "l2")
    pushed = []
    for layout, ref, arm_seed in ((l1, ref1, "arm-1"), (l2, ref2, "arm-2")):
        base = L.layer(layout, 1 * MiB, ns + "base")
        amd = L.layer(layout, 256 * 1024, ns + "amd")
        arm = L.layer(layout, 256 * 1024, ns + arm_seed)
        kids, _idx = index_image(layout, ref, [("amd64", [base, amd]), ("arm64", [base, arm])])
        rc, out = mirror(registry.module_args(layout, state_dir=str(tmp_path / "state")))
        assert rc == 0, out.get("msg", out)
        pushed.append((sorted("%s@%s" % (i["target"], i["digest"]) for i in out["images"]), kids))
    (old, old_kids), (new, new_kids) = pushed
    repo = "public.ecr.aws/%s/multi" % ns
    assert old_kids[0]["digest"] == new_kids[0]["digest"] and old_kids[1]["digest"] != new_kids[1]["digest"]
    old_index = old[0].split("@", 1)[1]

    rc, out = prune(tmp_path, dict(registry=registry.host, images=old, keep=new, username="pusher",
                                   password=registry.passwords["pusher"], ca_path=registry.ca))
    assert rc == 0, out
    assert out["removed"] == ["%s@%s" % (repo, old_index), "%s@%s" % (repo, old_kids[1]["digest"])], out
    assert registry.manifest_digest(repo, old_index) is None
    assert registry.manifest_digest(repo, old_kids[1]["digest"]) is None
    assert registry.manifest_digest(repo, old_kids[0]["digest"]) == old_kids[0]["digest"]  # the kept index uses it
    assert registry.manifest_digest(repo, "2") == new[0].split("@", 1)[1]
