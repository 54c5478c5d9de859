"""llmops.onprem.cluster_secrets puts generated credentials into the cluster as Secrets:
check mode predicts and creates nothing, a real run creates the Secret with the controller's
password, a re-run changes nothing, and no run prints the password, even at -vvv."""
import base64
import json
import os
import secrets
import urllib.parse
from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException

PLAYBOOK = Path(__file__).parent / "playbooks" / "cluster_secrets.yml"


@pytest.fixture
def site(tmp_path, kube):
    """An inventory like the redis stage leaves behind: a host with redis_connection, and the
    password file in the inventory's .private directory (0600)."""
    password = secrets.token_urlsafe(36)
    private = tmp_path / "inventory" / ".private" / "redis"
    private.mkdir(parents=True, mode=0o700)
    private.parent.chmod(0o700)  # as the stages leave .private (parents=True made it 0755)
    pw_file = private / "password"
    pw_file.write_text(password)
    pw_file.chmod(0o600)
    ns = "t-secrets-" + secrets.token_hex(3)
    connection = {"host": "10.89.0.2", "port": 6379, "tls": True, "password_file": str(pw_file),
                  "k8s_secret": {"name": "llmops-redis-auth", "key": "auth-token"}}
    # The registry stage leaves a .dockerconfigjson for its pull-only user; postgres a password
    # (with characters a URL must encode) and a DATABASE_URL template.
    pull = tmp_path / "inventory" / ".private" / "registry" / "pull-secret.json"
    pull.parent.mkdir(mode=0o700)
    pull_auth = base64.b64encode(("llmops-pull:" + secrets.token_urlsafe(30)).encode()).decode()
    pull.write_text(json.dumps({"auths": {"10.89.0.2:5000": {"auth": pull_auth}}}))
    pull.chmod(0o600)
    pg_password = secrets.token_urlsafe(30) + "@/:%"
    pg_file = tmp_path / "inventory" / ".private" / "postgres-password"
    pg_file.write_text(pg_password)
    pg_file.chmod(0o600)
    registry_connection = {"k8s_pull_secret": {"name": "llmops-registry-pull", "file": str(pull)}}
    postgres_connection = {
        "password_file": str(pg_file),
        "database_url_template": "postgresql://llm_engine:{password}@10.89.0.2:5432/llm_engine?sslmode=verify-full",
        "k8s_secret": {"name": "llm-engine-postgres-credentials", "key": "database_url"}}
    inventory = tmp_path / "inventory" / "hosts.yml"
    inventory.write_text(json.dumps({"all": {
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": kube.PYTHON},
                  "redis-host": {"redis_connection": connection},
                  "registry-host": {"registry_connection": registry_connection},
                  "postgres-host": {"postgres_connection": postgres_connection}},
        "children": {"redis": {"hosts": {"redis-host": {}}}, "registry": {"hosts": {"registry-host": {}}},
                     "postgres": {"hosts": {"postgres-host": {}}}},
        "vars": {"llmops_kubeconfig": kube.kubeconfig, "cluster_secrets_namespace": ns}}}))
    yield {"inventory": inventory, "password": password, "namespace": ns, "pull": pull.read_text(),
           "pull_auth": pull_auth, "pg_password": pg_password}
    kube.delete_namespace(ns)


def play(kube, site, *args, expect_rc=0):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_COLLECTIONS_PATH=str(kube.REPO / ".cache" / "collections"))
    p = kube.run([Path(kube.PYTHON).parent / "ansible-playbook", "-i", site["inventory"], *args, PLAYBOOK],
                 check=False, env=env)
    out = p.stdout + p.stderr
    assert p.returncode == expect_rc, out[-6000:]
    for name in ("password", "pull_auth", "pg_password"):
        assert site[name] not in out, "the %s appears in the output" % name
        assert base64.b64encode(site[name].encode()).decode() not in out, "the encoded %s appears in the output" % name
    recap = [line for line in p.stdout.splitlines() if line.startswith("localhost ") and "changed=" in line]
    return out, int(recap[-1].split("changed=")[1].split()[0]) if recap else None


def secret_value(kube, ns, name="llmops-redis-auth", key="auth-token"):
    try:
        s = kube.core.read_namespaced_secret(name, ns)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return s.type, base64.b64decode(s.data[key]).decode()


def test_check_mode_then_create_then_no_change(kube, site):
    ns = site["namespace"]
    out, predicted = play(kube, site, "--check", "--diff", "-vvv")
    # the namespace, (one task) the three Secrets it would get, and the site's state file the stage's record goes to
    assert predicted >= 3, (predicted, out[-3000:])
    assert out.count("would create Secret ") >= 3, out[-3000:]
    with pytest.raises(ApiException) as e:
        kube.core.read_namespace(ns)
    assert e.value.status == 404, "check mode created the namespace"

    out, changed = play(kube, site, "--diff", "-vvv")
    # check mode predicted exactly what the real run changes: the namespace, the Secrets task, the state file
    assert changed == predicted, (changed, predicted, out[-3000:])
    assert secret_value(kube, ns) == ("Opaque", site["password"])
    assert secret_value(kube, ns, "llmops-registry-pull", ".dockerconfigjson") == (
        "kubernetes.io/dockerconfigjson", site["pull"])
    kind, url = secret_value(kube, ns, "llm-engine-postgres-credentials", "database_url")
    assert kind == "Opaque"
    assert url == "postgresql://llm_engine:%s@10.89.0.2:5432/llm_engine?sslmode=verify-full" % (
        urllib.parse.quote(site["pg_password"], safe=""))
    assert '"gpus": ' in out and '"localhost"' in out  # cluster_secrets_connection lists the node

    out, changed = play(kube, site, "--diff", "-vvv")
    assert changed == 0, out[-3000:]

    out, changed = play(kube, site, "--check", "--diff")
    assert changed == 0, out[-3000:]


def test_missing_kubeconfig_is_named_and_nothing_is_created(kube, site):
    out, _changed = play(kube, site, "-e", "llmops_kubeconfig=/nonexistent/admin.kubeconfig", expect_rc=2)
    assert "cluster_secrets: no kubeconfig at /nonexistent/admin.kubeconfig; set llmops_kubeconfig" in out
    with pytest.raises(ApiException):
        kube.core.read_namespace(site["namespace"])
