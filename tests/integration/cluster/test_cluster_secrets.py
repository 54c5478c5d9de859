"""llmops.onprem.cluster_secrets puts generated credentials into the cluster as Secrets:
check mode predicts and creates nothing, a real run creates the Secret with the controller's
password, a re-run changes nothing, and no run prints the password, even at -vvv."""
import base64
import json
import os
import subprocess
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


# --- The database URL works from a pod (issue 19 item 7) --------------------------------------

GATEWAY = "10.244.0.1"   # tests/cluster/lib.sh K8S_POD_GW: pods reach the host here
PSQL_IMAGE = "localhost/llmops-test/psql:15"
PG_BIN = "/usr/lib/postgresql/15/bin"


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind((GATEWAY, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def psql_image(kube, tmp_path_factory):
    """Debian's psql binary and the libraries ldd names, as an image (no registry, no engine)."""
    out = tmp_path_factory.mktemp("psql") / "psql.tar"
    psql = PG_BIN + "/psql"
    adds = ["%s:/usr/bin/psql:0755" % psql]
    for line in kube.run(["ldd", psql]).stdout.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            adds.append("%s:%s:0755" % (os.path.realpath(parts[2]), parts[0] if parts[0].startswith("/") else
                                        os.path.join(os.path.dirname(parts[2]), parts[0])))
        elif parts and parts[0].startswith("/"):   # the dynamic loader
            adds.append("%s:%s:0755" % (os.path.realpath(parts[0]), parts[0]))
    cmd = ["python3", kube.REPO / "serving" / "images" / "mkimage.py", "--tag", PSQL_IMAGE, "--output", out,
           "--env", "HOME=/tmp", "--user", "65534:65534"]
    for a in adds:
        cmd += ["--add", a]
    kube.run(cmd)
    kube.run([kube.CLUSTER / "load-image.sh", out])
    return PSQL_IMAGE


@pytest.fixture(scope="module")
def postgres_tls(kube):
    """A real PostgreSQL 15 on the pod bridge's gateway address, TLS only, its certificate issued by
    a test CA for that address; a role llm_engine whose password needs URL encoding."""
    import shutil
    import tempfile
    if not os.path.exists(PG_BIN + "/postgres"):
        pytest.fail("PostgreSQL 15's server is not installed (tests/tools/setup.sh installs postgresql-15)")
    base = tempfile.mkdtemp(prefix="llmops-pg-")   # not under pytest's 0700 tmp: the postgres user reads it
    os.chmod(base, 0o755)
    ca_key, ca = os.path.join(base, "ca.key"), os.path.join(base, "ca.crt")
    key, csr, crt = os.path.join(base, "server.key"), os.path.join(base, "server.csr"), os.path.join(base, "server.crt")
    ext = os.path.join(base, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:%s\n" % GATEWAY)
    kube.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=llmops test site CA"])
    kube.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", key, "-out", csr, "-subj", "/CN=%s" % GATEWAY])
    kube.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
              "-out", crt, "-days", "2", "-extfile", ext])
    data, sock = os.path.join(base, "data"), os.path.join(base, "sock")
    os.mkdir(sock)
    shutil.chown(key, "postgres")
    os.chmod(key, 0o600)
    shutil.chown(sock, "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    kube.run(["install", "-d", "-o", "postgres", "-m", "0700", data])
    kube.run(as_pg + [PG_BIN + "/initdb", "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=reject"])
    with open(os.path.join(data, "pg_hba.conf"), "w") as f:
        f.write("local all postgres trust\nhostssl llm_engine llm_engine 0.0.0.0/0 scram-sha-256\n")
    port = _free_port()
    log = open(os.path.join(base, "postgres.log"), "wb")
    proc = subprocess.Popen(as_pg + [PG_BIN + "/postgres", "-D", data, "-k", sock, "-h", GATEWAY, "-p", str(port),
                                     "-c", "ssl=on", "-c", "ssl_cert_file=" + crt, "-c", "ssl_key_file=" + key],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        kube.wait_for("postgres on %s:%d" % (GATEWAY, port), lambda: subprocess.run(
            [PG_BIN + "/pg_isready", "-h", GATEWAY, "-p", str(port)], capture_output=True, check=False).returncode == 0,
            timeout=60)
        password = secrets.token_urlsafe(30) + "@/:%"
        sql = ("CREATE ROLE llm_engine LOGIN PASSWORD '%s';" % password, "CREATE DATABASE llm_engine OWNER llm_engine;")
        for s in sql:
            kube.run(as_pg + ["/usr/bin/env", "PGHOST=" + sock, "PGPORT=%d" % port, PG_BIN + "/psql", "-U", "postgres",
                              "-v", "ON_ERROR_STOP=1", "-c", s])
        yield {"port": port, "ca": ca, "password": password}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _psql_pod(kube, name, image, mount_ca):
    k8s = kube.k8s
    env = [k8s.V1EnvVar(name="DATABASE_URL", value_from=k8s.V1EnvVarSource(secret_key_ref=k8s.V1SecretKeySelector(
        name="llm-engine-postgres-credentials", key="database_url")))]
    mounts = [k8s.V1VolumeMount(name="site-ca", mount_path="/etc/llmops/site-ca", read_only=True)] if mount_ca else []
    volumes = [k8s.V1Volume(name="site-ca", secret=k8s.V1SecretVolumeSource(secret_name="llmops-site-ca"))]
    container = k8s.V1Container(
        name="main", image=image, image_pull_policy="Never", env=env, volume_mounts=mounts,
        command=["/usr/bin/psql", "$(DATABASE_URL)", "-tAc",
                 "select current_user || ' ssl=' || ssl from pg_stat_ssl where pid = pg_backend_pid()"])
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=name),
                     spec=k8s.V1PodSpec(containers=[container], volumes=volumes, restart_policy="Never",
                                        automount_service_account_token=False))


def test_the_database_url_connects_from_a_pod_with_verify_full(kube, site, psql_image, postgres_tls):
    """The URL cluster_secrets writes, read by a pod exactly as model-engine's containers read it (the
    Secret's key in an env var, the CA Secret mounted at /etc/llmops/site-ca), logs in to a real
    PostgreSQL over TLS with sslmode=verify-full; the same pod without the CA mounted is refused, which is
    why the URL has to name the CA's path (libpq's default, ~/.postgresql/root.crt, is in no pod)."""
    ns = site["namespace"]
    inventory = json.loads(site["inventory"].read_text())
    pg = inventory["all"]["hosts"]["postgres-host"]["postgres_connection"]
    pg["database_url_template"] = "postgresql://llm_engine:{password}@%s:%d/llm_engine?sslmode=verify-full" % (
        GATEWAY, postgres_tls["port"])
    Path(pg["password_file"]).write_text(postgres_tls["password"])
    site["pg_password"] = postgres_tls["password"]
    inventory["all"]["vars"]["cluster_secrets_ca_file"] = postgres_tls["ca"]
    site["inventory"].write_text(json.dumps(inventory))
    play(kube, site)
    _kind, url = secret_value(kube, ns, "llm-engine-postgres-credentials", "database_url")
    assert url.endswith("?sslmode=verify-full&sslrootcert=/etc/llmops/site-ca/ca.crt"), url
    kube.wait_for("the default service account in %s" % ns,
                  lambda: kube.core.read_namespaced_service_account("default", ns), timeout=60)

    kube.core.create_namespaced_pod(ns, _psql_pod(kube, "psql", psql_image, mount_ca=True))
    pod = kube.wait_pod_done(ns, "psql", timeout=120)
    log = kube.pod_log(ns, "psql")
    assert pod.status.phase == "Succeeded", log
    assert log.strip() == "llm_engine ssl=true", log

    kube.core.create_namespaced_pod(ns, _psql_pod(kube, "psql-no-ca", psql_image, mount_ca=False))
    pod = kube.wait_pod_done(ns, "psql-no-ca", timeout=120)
    log = kube.pod_log(ns, "psql-no-ca")
    assert pod.status.phase == "Failed", log
    assert 'root certificate file "/etc/llmops/site-ca/ca.crt" does not exist' in log, log
    assert postgres_tls["password"] not in log
