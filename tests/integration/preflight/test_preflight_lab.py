"""The preflight stage against two real hosts (podman containers running systemd, the test image of
tests/images/debian12-systemd) and the lab bundle (tests/integration/bundle/lab_bundle.py, signed):

- four faults at once - the package repository's filesystem full (a 1 MiB tmpfs at /var/lib/llmops,
  filled), one host's clock an hour ahead (Debian's faketime as that host's Python interpreter, set in
  the test inventory only: the machine's clock is never touched), a program on Redis's port, and a
  service name that resolves nowhere - are all reported in one failed run, each with its host, what
  was expected, what was found and the fix; nothing was copied;
- site.yml stops at its preflight stage with the same problems: no later play starts on any host;
- check mode reports the same problems;
- with the faults removed the same inventory passes with changed=0 everywhere.
"""
import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(REPO, "tests", "integration", "bundle"))
import lab_bundle  # noqa: E402

TAG = uuid.uuid4().hex[:6]
NET = "llmops-pf-%s" % TAG
HOSTS = {"pf-a": "llmops-pf-a-%s" % TAG, "pf-b": "llmops-pf-b-%s" % TAG}
# The hosts find each other through /etc/hosts (--add-host), as at a site without DNS; podman's own DNS
# is not on everywhere (the CNI backend has none).
SUBNET = "10.213.%d" % (int(TAG, 16) % 250)
ADDRESSES = {"pf-a": SUBNET + ".10", "pf-b": SUBNET + ".11"}
CACHE = os.environ.get("LLMOPS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "llmops-onprem"))


def sh(argv, check=True, timeout=300, env=None):
    r = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError("%s failed (%d): %s%s" % (" ".join(argv), r.returncode, r.stdout, r.stderr))
    return r


def podman_env():
    env = dict(os.environ)
    out = sh([os.path.join(REPO, "tests", "tools", "podman-env.sh")]).stdout
    m = re.search(r"export CONTAINERS_CONF=(\S+)", out)
    if m:
        env["CONTAINERS_CONF"] = m.group(1)
    return env


def wait_for(what, probe, bound=60.0):
    """Poll probe() until it is true, at most bound seconds (a condition, not a fixed sleep)."""
    end = time.monotonic() + bound
    while time.monotonic() < end:
        if probe():
            return
        time.sleep(0.2)
    raise AssertionError("timed out after %.0f s waiting for %s" % (bound, what))


def faketime_debs():
    """Debian's faketime and libfaketime .debs, downloaded once into the project cache."""
    d = os.path.join(CACHE, "debs", "faketime")
    os.makedirs(d, exist_ok=True)
    if len([f for f in os.listdir(d) if f.endswith(".deb")]) < 2:
        r = subprocess.run(["apt-get", "download", "faketime", "libfaketime"], cwd=d, capture_output=True, text=True,
                           check=False, timeout=300)
        assert r.returncode == 0, "apt-get download faketime libfaketime failed: %s" % r.stderr
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".deb"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    env = podman_env()
    image = sh([os.path.join(REPO, "tests", "images", "debian12-systemd", "build.sh")], timeout=900, env=env).stdout.split()[-1]
    bundle = lab_bundle.build(tmp_path_factory.mktemp("bundle"))
    podman = ["podman"]
    sh(podman + ["network", "create", "--subnet", SUBNET + ".0/24", NET], env=env)
    try:
        for name, cname in HOSTS.items():
            extra = []
            if name == "pf-a":
                extra = ["--mount", "type=tmpfs,destination=/var/lib/llmops,tmpfs-size=1m"]
            add_hosts = ["--add-host=%s:%s" % kv for kv in sorted(ADDRESSES.items())]
            sh(podman + ["run", "-d", "--name", cname, "--hostname", name, "--network", NET, "--ip", ADDRESSES[name]] + add_hosts
               + ["--systemd", "always", "--label", "llmops.test=preflight"] + extra + [image, "/sbin/init"], env=env)
        for cname in HOSTS.values():
            def booted(c=cname):
                state = sh(podman + ["exec", c, "systemctl", "is-system-running"], check=False, env=env).stdout.strip()
                return state in ("running", "degraded")
            wait_for("systemd in %s" % cname, booted)
        for deb in faketime_debs():
            sh(podman + ["cp", deb, "%s:/tmp/" % HOSTS["pf-b"]], env=env)
        sh(podman + ["exec", HOSTS["pf-b"], "sh", "-c", "dpkg -i /tmp/*.deb"], env=env)
        # Ansible quotes the interpreter as one word: a wrapper runs Python under faketime (+1 hour) on this host only.
        sh(podman + ["exec", HOSTS["pf-b"], "sh", "-c", "printf '#!/bin/sh\\nexec faketime -f +1h /usr/bin/python3 \"$@\"\\n' "
                     "> /usr/local/bin/python3-an-hour-ahead && chmod 755 /usr/local/bin/python3-an-hour-ahead"], env=env)
        yield dict(env=env, bundle=bundle, podman=podman)
    finally:
        for cname in HOSTS.values():
            sh(podman + ["rm", "-f", "-t", "0", cname], check=False, env=env)
        sh(podman + ["network", "rm", "-f", NET], check=False, env=env)


def inventory(tmp_path, faults):
    inv = tmp_path / ("inv-faults" if faults else "inv-clean")
    inv.mkdir()
    hosts = {
        "pf-a": {"ansible_connection": "containers.podman.podman", "ansible_host": HOSTS["pf-a"]},
        "pf-b": {"ansible_connection": "containers.podman.podman", "ansible_host": HOSTS["pf-b"]},
    }
    groups = {"redis": ["pf-a"], "registry": ["pf-a"], "postgres": ["pf-b"], "minio": []}
    if faults:
        # This host alone reads an hour ahead: its Python runs under faketime (a test inventory setting, not the role's).
        hosts["pf-b"]["ansible_python_interpreter"] = "/usr/local/bin/python3-an-hour-ahead"
        # A service host whose inventory name no DNS knows (it is reached through the container name).
        hosts["pf-ghost"] = {"ansible_connection": "containers.podman.podman", "ansible_host": HOSTS["pf-b"],
                             "minio_backend": "external"}
        groups["minio"] = ["pf-ghost"]
    doc = {"all": {"hosts": hosts, "children": {g: {"hosts": {h: None for h in hs}} for g, hs in groups.items()}}}
    (inv / "hosts.yml").write_text(json.dumps(doc), encoding="utf-8")
    return inv


def playbook(lab, inv, *args, book="playbooks/preflight.yml"):
    env = dict(lab["env"], ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_PIPELINING="True")
    exe = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    b = lab["bundle"]
    return subprocess.run([exe, "-i", str(inv), book, "-e", "llmops_bundle=%s" % b["media"],
                           "-e", "bundle_import_public_key=%s" % b["pub"]] + list(args),
                          cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=600)


def flat(text):
    return re.sub(r"\s+", " ", text)


def task_result(out, task, host="localhost"):
    """The JSON result the default callback printed for one task on one host."""
    part = out.split(task + "]", 1)[1]
    m = re.search(r"(?:ok|fatal): \[%s\](?:: FAILED!)? => " % host, part)
    assert m, part[:2000]
    return json.JSONDecoder().raw_decode(part[m.end():].lstrip())[0]


def problems(out):
    msg = task_result(out, "fail once with every problem found")["msg"]
    m = re.match(r"preflight found (\d+) problem\(s\); nothing was copied or installed: (.*)$", flat(msg).strip())
    assert m, msg
    return int(m.group(1)), re.split(r" ?\(\d+\) ", " " + m.group(2).strip())[1:]


def table(out):
    """The capacity table lines as printed by the 'show the capacity plan' task."""
    return task_result(out, "show the capacity plan")["msg"]


def digits_out(problem_list):
    """The problems with every digit replaced: times and pids differ between runs."""
    return sorted(re.sub(r"\d", "N", p) for p in problem_list)


def exec_(lab, host, *cmd, check=True):
    return sh(lab["podman"] + ["exec", HOSTS[host]] + list(cmd), check=check, env=lab["env"])


def test_every_fault_in_one_run_then_check_mode_the_same_then_clean(lab, tmp_path):
    # Faults: the filesystem of /var/lib/llmops is full; a program holds Redis's port.
    exec_(lab, "pf-a", "sh", "-c", "dd if=/dev/zero of=/var/lib/llmops/filler bs=4k 2>/dev/null; true")
    pid = exec_(lab, "pf-a", "sh", "-c", "nohup python3 -m http.server 6379 >/dev/null 2>&1 & echo $!").stdout.strip()
    wait_for("python3 listening on 6379 in pf-a", lambda: ":6379 " in exec_(lab, "pf-a", "ss", "-Hltn").stdout)
    inv = inventory(tmp_path, faults=True)

    r = playbook(lab, inv)
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode == 2, out
    count, found = problems(out)
    text = "\n".join(found)
    assert count == 4, text
    assert re.search(r"capacity: pf-a: package repository at /var/lib/llmops/apt needs [\d.]+ KiB \(\d+ bytes\), the filesystem "
                     r"/var/lib/llmops holding it has 0 B \(0 bytes\) free\. Fix: free [\d.]+ KiB on /var/lib/llmops, mount a larger "
                     r"filesystem at /var/lib/llmops/apt, or set packages_repo_dir to a path on a larger filesystem, then run again\.",
                     text), text
    assert re.search(r"clock: pf-b reads \S+, 3[56]\d\d s ahead of the controller \(\S+\); at most 120 s is allowed", text), text
    assert "Fix: synchronise pf-b's clock" in text
    assert re.search(r"ports: pf-a: redis will listen on port 6379, but \S+:6379 held by python3 \(pid \d+\)\. Fix: stop that "
                     r"program \(or move it\), or set redis_port to a free port", text), text
    assert re.search(r"names: pf-ghost resolves on no host \(getent hosts pf-ghost found nothing on pf-a, pf-b, pf-ghost\)\. "
                     r"Fix: add pf-ghost to the site's DNS", text), text
    rows = table(out)
    assert rows[0].startswith("Capacity plan (bundle lab"), rows
    assert re.match(r"host +destination +path +filesystem +needed +free +status$", rows[1]), rows
    assert any(re.match(r"pf-a +package repository +/var/lib/llmops/apt +/var/lib/llmops +\S+ KiB +0 B +TOO SMALL$", x) for x in rows), rows
    assert any(re.match(r"pf-a +registry storage +/var/lib/docker-registry +/ +.* +ok$", x) for x in rows), rows
    assert any(re.match(r"pf-b +PostgreSQL data +/var/lib/postgresql +/ +1\.1 GiB +.* +ok$", x) for x in rows), rows
    assert any(re.match(r"pf-ghost +package repository +/var/lib/llmops/apt +/ +.* +ok$", x) for x in rows), rows
    assert any(re.match(r"pf-ghost +object store \(external\) +bucket \S+ +- +\S+ KiB +unknown +unknown$", x) for x in rows), rows
    assert any(re.match(r"controller +bundle import +\S+/\.bundle +/\S* +[\d.]+ [KM]iB +[\d.]+ \S+ +ok$", x) for x in rows), rows
    with open(os.path.join(REPO, ".cache", "preflight-table.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n\n" + "\n".join(found) + "\n")
    # Nothing was copied: no repository on the host, no import on the controller.
    assert exec_(lab, "pf-a", "test", "-e", "/var/lib/llmops/apt", check=False).returncode == 1
    assert not (inv / ".bundle").exists()
    assert re.search(r"pf-a\s+: ok=\d+\s+changed=0\s", r.stdout) and re.search(r"pf-b\s+: ok=\d+\s+changed=0\s", r.stdout), r.stdout

    # site.yml stops at its preflight stage: no later play starts on any host, nothing is imported or copied.
    site = playbook(lab, inv, book="playbooks/site.yml")
    sout = site.stdout + site.stderr
    assert site.returncode == 2, sout
    assert "PLAY [Stage preflight" in site.stdout and "PLAY [Stage bundle_import" not in site.stdout, site.stdout
    assert re.findall(r"^PLAY \[(.*?) - ", site.stdout, re.M) == ["Check the inventory", "Stage preflight"], site.stdout
    scount, sfound = problems(sout)
    assert scount == 4 and digits_out(sfound) == digits_out(found), "\n".join(sfound)
    assert exec_(lab, "pf-a", "test", "-e", "/var/lib/llmops/apt", check=False).returncode == 1
    assert not (inv / ".bundle").exists() and not (inv / ".private").exists()

    c = playbook(lab, inv, "--check")
    cout = c.stdout + c.stderr
    assert c.returncode == 2, cout
    ccount, cfound = problems(cout)
    assert ccount == 4 and digits_out(cfound) == digits_out(found), "\n".join(cfound)

    # Clean: faults removed, the clock and name faults are inventory-only.
    exec_(lab, "pf-a", "sh", "-c", "kill %s; rm -f /var/lib/llmops/filler" % int(pid))
    wait_for("port 6379 free in pf-a", lambda: ":6379 " not in exec_(lab, "pf-a", "ss", "-Hltn").stdout)
    clean = inventory(tmp_path, faults=False)
    ok = playbook(lab, clean)
    oout = ok.stdout + ok.stderr
    assert ok.returncode == 0, oout
    assert "preflight: no problem on 2 host(s)" in oout
    for h in ("pf-a", "pf-b", "localhost"):
        assert re.search(r"%s\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0" % h, ok.stdout), ok.stdout
