"""Links and dot-files in a model directory (issue 14 item 3, issue 19 item 2), on both sides: the bundle build
(checkpoint_copy, which roles/bundle runs for each model) and the site (checkpoint_verify; checkpoint_sync lists
with the same _checkpoint.list_files). Each test builds the model directory from scratch and runs the real
module in its own process."""
import json
import os
import subprocess
import sys

import pytest

from conftest import COLLECTIONS, ROOT, snapshot

from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint

SAFETENSORS = os.path.join(ROOT, "tests", "tools", "make_checkpoint.py")
SIGNING_KEY = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE\n-----END PRIVATE KEY-----\n"


def module(tmp_path, name, args, check_mode=False):
    f = tmp_path / ("args-%s.json" % os.urandom(4).hex())
    f.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check_mode)}))
    p = subprocess.run([sys.executable, os.path.join(ROOT, "plugins", "modules", name + ".py"), str(f)],
                       capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ, PYTHONPATH=COLLECTIONS))
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        raise AssertionError("module printed no JSON (rc %d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr))


@pytest.fixture
def host(tmp_path):
    """A model directory (real safetensors shards, config, tokenizer) and, beside it, the build host's secrets."""
    model = tmp_path / "model"
    subprocess.run([sys.executable, SAFETENSORS, str(model)], check=True, capture_output=True)
    private = tmp_path / "private"
    private.mkdir()
    (private / "signing-key.pem").write_bytes(SIGNING_KEY)
    os.chmod(private / "signing-key.pem", 0o600)
    (private / "etc").mkdir()
    for i in range(50):
        (private / "etc" / ("f%d.conf" % i)).write_text("x")
    return model, private


def test_the_bundle_build_refuses_a_link_to_the_signing_key(tmp_path, host):
    model, private = host
    os.unlink(model / "tokenizer_config.json")
    os.symlink(private / "signing-key.pem", model / "tokenizer_config.json")
    dest = tmp_path / "bundle" / "models" / "demo"
    before = snapshot(str(tmp_path))
    rc, out = module(tmp_path, "checkpoint_copy", dict(src=str(model), dest=str(dest)))
    assert rc == 1 and out["failed"]
    assert out["msg"] == (
        "checkpoint directory %s has 1 symbolic link(s) that are not followed: tokenizer_config.json is a symbolic "
        "link to %s, outside the checkpoint directory %s: refused (it could put any file of this host into the bundle "
        "or the object store); if the file belongs to the model, replace the link with the file itself "
        "(cp --dereference)" % (model, private / "signing-key.pem", model))
    assert not os.path.exists(tmp_path / "bundle")
    after = snapshot(str(tmp_path))
    assert {k: v for k, v in after.items() if not k.startswith("args-")} == before
    assert SIGNING_KEY.decode() not in json.dumps(out)


def test_a_link_to_a_directory_is_refused_without_listing_it(tmp_path, host):
    model, private = host
    os.symlink(private / "etc", model / "extra")
    dest = tmp_path / "bundle" / "models" / "demo"
    rc, out = module(tmp_path, "checkpoint_copy", dict(src=str(model), dest=str(dest)))
    assert rc == 1
    assert out["msg"] == ("checkpoint directory %s has 1 symbolic link(s) that are not followed: extra is a symbolic "
                          "link to the directory %s: refused (copy the files into the checkpoint directory instead "
                          "of linking)" % (model, private / "etc"))
    assert not os.path.exists(tmp_path / "bundle")


def test_a_link_inside_the_model_directory_is_copied_as_the_file(tmp_path, host):
    model, _private = host
    os.symlink("tokenizer.json", model / "tokenizer-link.json")
    dest = tmp_path / "bundle" / "models" / "demo"
    rc, out = module(tmp_path, "checkpoint_copy", dict(src=str(model), dest=str(dest)))
    assert rc == 0, out.get("msg")
    assert not os.path.islink(dest / "tokenizer-link.json")
    assert (dest / "tokenizer-link.json").read_bytes() == (model / "tokenizer.json").read_bytes()


def test_the_site_refuses_the_same_link(tmp_path, host):
    """checkpoint_verify (the site's checkpoints stage) lists with the same rule and refuses with the same words."""
    model, private = host
    os.unlink(model / "tokenizer_config.json")
    os.symlink(private / "signing-key.pem", model / "tokenizer_config.json")
    before = snapshot(str(private))
    rc, out = module(tmp_path, "checkpoint_verify", dict(path=str(model)))
    assert rc == 1
    assert out["msg"].startswith("checkpoint directory %s has 1 symbolic link(s) that are not followed: "
                                 "tokenizer_config.json is a symbolic link to %s, outside the checkpoint directory"
                                 % (model, private / "signing-key.pem"))
    assert snapshot(str(private)) == before


def test_dot_files_stay_out_of_the_bundle_and_the_copy_passes_the_site_check(tmp_path, host):
    """.gitattributes and .cache/ in the source are not copied; a dot-file already in the bundle is removed; the
    bundle's copy then passes checkpoint_verify against the manifest the copy reports."""
    model, _private = host
    (model / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (model / ".cache").mkdir()
    (model / ".cache" / "huggingface").write_text("x")
    dest = tmp_path / "bundle" / "models" / "demo"
    dest.mkdir(parents=True)
    (dest / ".gitattributes").write_text("stale\n")
    rc, check = module(tmp_path, "checkpoint_copy", dict(src=str(model), dest=str(dest)), check_mode=True)
    assert rc == 0 and check["changed"] and check["removed"] == [".gitattributes"]
    assert (dest / ".gitattributes").exists(), "check mode removed something"
    rc, out = module(tmp_path, "checkpoint_copy", dict(src=str(model), dest=str(dest)))
    assert rc == 0, out.get("msg")
    assert out["removed"] == [".gitattributes"] and out["copied"] == check["copied"]
    assert sorted(os.listdir(dest)) == sorted(_checkpoint.list_files(str(model)))
    assert not any(name.startswith(".") for name in os.listdir(dest))
    manifest = _checkpoint.manifest_from_dir(str(dest), "demo")
    assert _checkpoint.manifest_digest(manifest) == out["manifest_digest"]
    (tmp_path / "demo.json").write_bytes(_checkpoint.canonical_bytes(manifest))
    rc, site = module(tmp_path, "checkpoint_verify", dict(path=str(dest), manifest=str(tmp_path / "demo.json")))
    assert rc == 0, site.get("msg")
    rc, again = module(tmp_path, "checkpoint_copy", dict(src=str(model), dest=str(dest)))
    assert rc == 0 and again["changed"] is False


def test_a_manifest_naming_a_dot_file_is_refused_at_the_site(tmp_path, host):
    """A bundle built before the rule (its manifest lists .gitattributes) fails with the reason, not 'missing'."""
    model, _private = host
    files = [dict(path=".gitattributes", size=1, sha256="0" * 64)]
    (tmp_path / "old.json").write_text(json.dumps(dict(schema=_checkpoint.SCHEMA, name="demo", files=files)))
    rc, out = module(tmp_path, "checkpoint_verify", dict(path=str(model), manifest=str(tmp_path / "old.json")))
    assert rc == 1
    assert out["msg"] == ("manifest %s is not a valid checkpoint manifest: files[0].path '.gitattributes' names a "
                          "dot-file or dot-directory, which is not part of a checkpoint (rebuild the bundle)"
                          % (tmp_path / "old.json"))


def test_the_bundle_build_runs_the_checkpoint_check(tmp_path, host):
    """A checkpoint the site would refuse (no tokenizer) fails the bundle build, and nothing is copied."""
    model, _private = host
    os.unlink(model / "tokenizer.json")
    dest = tmp_path / "bundle" / "models" / "demo"
    rc, out = module(tmp_path, "checkpoint_copy", dict(src=str(model), dest=str(dest)))
    assert rc == 1
    assert out["msg"] == ("checkpoint %s is not usable, so it is not put into the bundle (the site would refuse it after "
                          "the import): no tokenizer in %s: expected tokenizer.json, tokenizer.model, vocab.json + "
                          "merges.txt, or tiktoken.model" % (model, model))
    assert not os.path.exists(tmp_path / "bundle")
