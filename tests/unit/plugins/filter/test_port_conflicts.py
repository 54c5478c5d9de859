"""port_conflicts: which listening sockets keep a service from binding its address and port."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.port_conflicts import FilterModule, port_conflicts

# Real `ss -Hltnpe` lines from a Debian 12 host (a container: other users' processes are hidden).
SS = """\
LISTEN 0      511    10.89.0.5:5000      0.0.0.0:* users:(("nginx",pid=901,fd=6),("nginx",pid=900,fd=6)) ino:735115 sk:21 <->
LISTEN 0      4096   127.0.0.1:5001      0.0.0.0:* uid:101 ino:733766 sk:22 <->
LISTEN 0      244    10.89.0.5:5432      0.0.0.0:* uid:104 ino:733999 sk:23 <->
LISTEN 0      5      0.0.0.0:8080        0.0.0.0:* users:(("python3",pid=812,fd=3)) ino:1 sk:24 <->
LISTEN 0      4096         *:9000              *:* uid:1000 ino:2 sk:25 v6only:0 <->
LISTEN 0      511       [::]:80             [::]:* users:(("apache2",pid=77,fd=4)) ino:3 sk:26 v6only:1 <->
LISTEN 0      4096 127.0.0.53%lo:53      0.0.0.0:* users:(("systemd-resolve",pid=50,fd=14)) ino:4 sk:27 <->
"""


def test_the_service_itself_is_no_conflict():
    assert port_conflicts(SS, 5000, "10.89.0.5", ["nginx"]) == []
    assert port_conflicts(SS, 5001, "127.0.0.1", ["docker-registry"], [101]) == []
    assert port_conflicts(SS, 5432, "10.89.0.5", ["postgres"], [104]) == []


def test_a_foreign_process_on_the_same_address_is_named_with_its_pids():
    assert port_conflicts(SS, 5000, "10.89.0.5", ["docker-registry"]) == ["10.89.0.5:5000 held by nginx (pid 900, 901)"]


def test_a_wildcard_listener_conflicts_with_any_address():
    assert port_conflicts(SS, 8080, "10.89.0.5", ["nginx"]) == ["0.0.0.0:8080 held by python3 (pid 812)"]
    assert port_conflicts(SS, 80, "10.89.0.5", ["nginx"]) == ["[::]:80 held by apache2 (pid 77)"]


def test_an_invisible_process_is_judged_by_its_uid():
    assert port_conflicts(SS, 9000, "10.89.0.5", ["minio"], [1001]) == [
        "*:9000 held by a process of uid 1000 (its name is not visible)"]
    assert port_conflicts(SS, 5432, "10.89.0.5", ["postgres"], []) == [
        "10.89.0.5:5432 held by a process of uid 104 (its name is not visible)"]


def test_other_addresses_and_ports_do_not_conflict():
    assert port_conflicts(SS, 5001, "10.89.0.5", []) == []
    assert port_conflicts(SS, 53, "10.89.0.5", []) == []
    assert port_conflicts(SS, 53, "127.0.0.53", []) == ["127.0.0.53%lo:53 held by systemd-resolve (pid 50)"]
    assert port_conflicts(SS, 6379, "10.89.0.5", []) == []
    assert port_conflicts("", 5000, "10.89.0.5", []) == []


def test_an_ipv4_mapped_listener_matches_its_ipv4_address():
    line = 'LISTEN 0 5 [::ffff:10.89.0.5]:5000 [::]:* users:(("socat",pid=9,fd=5)) ino:1 sk:1 <->'
    assert port_conflicts(line, "5000", "10.89.0.5", []) == ["[::ffff:10.89.0.5]:5000 held by socat (pid 9)"]


def test_bad_input_is_refused():
    with pytest.raises(AnsibleFilterError, match="expected the text output"):
        port_conflicts(["LISTEN"], 5000, "10.89.0.5")
    with pytest.raises(AnsibleFilterError, match="port must be a number"):
        port_conflicts(SS, "http", "10.89.0.5")


def test_registered_name():
    assert FilterModule().filters()["port_conflicts"] is port_conflicts
