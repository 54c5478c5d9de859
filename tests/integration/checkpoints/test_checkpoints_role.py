"""The llmops.onprem.checkpoints role through ansible-playbook against a real `rclone serve s3`:
check -> real -> check again (no change) -> real again (no change), and a broken checkpoint
refused before anything is uploaded."""
import json
import os
import subprocess

from ckpt_helpers import RW, VENV_BIN, make_checkpoint, module_env

from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))


def playbook(s3, tmp_path, models, check=False):
    creds = tmp_path / "creds"
    (creds / "readwrite").mkdir(parents=True, exist_ok=True)
    (creds / "readwrite" / "access-key").write_text(RW[0])
    (creds / "readwrite" / "secret-key").write_text(RW[1])
    out = tmp_path / "synced.json"
    extra = dict(ckpt_endpoint=s3.url, ckpt_cred_dir=str(creds), ckpt_models=models, ckpt_out=str(out))
    env = module_env()
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.builtin.default"
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", os.path.join(HERE, "playbooks", "role.yml"),
           "-e", json.dumps(extra)] + (["--check"] if check else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    recap = [ln for ln in proc.stdout.splitlines() if ln.startswith("localhost ")]
    synced = json.loads(out.read_text()) if out.exists() and proc.returncode == 0 else None
    return proc, recap[-1] if recap else "", synced


def test_role_check_real_check_real(s3, tmp_path):
    with_manifest = make_checkpoint(str(tmp_path / "a"), seed=1)
    manifest_path = str(tmp_path / "a.manifest.json")
    manifest = _checkpoint.manifest_from_dir(with_manifest, "model-a")
    with open(manifest_path, "wb") as fh:
        fh.write(_checkpoint.canonical_bytes(manifest))
    without = make_checkpoint(str(tmp_path / "b"), seed=2)
    models = [dict(name="model-a", src=with_manifest, manifest=manifest_path), dict(name="model-b", src=without)]

    proc, recap, synced = playbook(s3, tmp_path, models, check=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "changed=0" not in recap
    assert s3.objects("model-a") == {}

    proc, recap, synced = playbook(s3, tmp_path, models)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    digest_a = _checkpoint.manifest_digest(manifest)
    assert [(s["name"], s["bucket"], s["prefix"], s["files"], s["uploaded"], s["verified"]) for s in synced] == [
        ("model-a", "model-checkpoints", "model-a/" + digest_a, 5, 5, True),
        ("model-b", "model-checkpoints", "model-b/" + synced[1]["digest"], 5, 5, True)]
    assert synced[0]["digest"] == digest_a
    assert ".llmops/manifest.json" in s3.objects("model-b/" + synced[1]["digest"])
    assert RW[1] not in proc.stdout

    for check in (True, False):
        proc, recap, synced = playbook(s3, tmp_path, models, check=check)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "changed=0" in recap, proc.stdout
    assert [s["bytes_uploaded"] for s in synced] == [0, 0]


def test_role_refuses_a_tar_before_uploading(s3, tmp_path):
    bad = tmp_path / "laguna"
    bad.mkdir()
    (bad / "laguna_xs.tar").write_bytes(b"\0" * 1024)
    proc = playbook(s3, tmp_path, [dict(name="laguna", src=str(bad))])[0]
    assert proc.returncode != 0
    assert "laguna_xs.tar (.tar); extract it first" in proc.stdout
    assert s3.objects("laguna") == {}
