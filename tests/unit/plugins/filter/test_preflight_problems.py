"""preflight_problems: clocks, names, ports, GPUs and kernel headers, each problem with its host, what was
expected, what was found and the fix."""
import re

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.port_conflicts import port_conflicts
from ansible_collections.llmops.onprem.plugins.filter.preflight_problems import (
    FilterModule, clock_problems, gpu_problems, kernel_problems, name_problems, port_problems, preflight_problems)

T = 1764864000.0  # 2025-12-04T16:00:00Z


def sample(host, offset, spread=2.0):
    return {"host": host, "epoch": str(int(T + offset)), "before": T - spread / 2, "after": T + spread / 2}


def test_clock_within_the_bound_or_inside_the_controller_window_is_fine():
    assert clock_problems([sample("a", 0), sample("b", 119), sample("c", -120), sample("d", 0.5)], 120) == []


def test_clock_an_hour_ahead_and_behind():
    out = clock_problems([sample("infra-2", 3600), sample("infra-3", -600)], 120)
    assert out[0] == ("clock: infra-2 reads 2025-12-04T17:00:00Z, 3599 s ahead of the controller (2025-12-04T16:00:01Z); "
                      "at most 120 s is allowed: TLS certificates and tokens are refused when clocks disagree by minutes. "
                      "Fix: synchronise infra-2's clock with the site's time source (chrony or systemd-timesyncd), then run again.")
    assert out[1].startswith("clock: infra-3 reads 2025-12-04T15:50:00Z, 599 s behind the controller (2025-12-04T15:59:59Z)")


def test_clock_bound_is_a_parameter():
    assert len(clock_problems([sample("a", 100)], 60)) == 1


def test_names_alike_everywhere_are_fine():
    same = {"infra-1": ["10.0.0.5"]}
    assert name_problems({"infra-1": same, "gpu-1": same, "gpu-2": same}) == []


def test_a_name_that_resolves_nowhere():
    assert name_problems({"a": {"ghost": []}, "b": {"ghost": []}}) == [
        "names: ghost resolves on no host (getent hosts ghost found nothing on a, b). Fix: add ghost to the site's DNS "
        "(or to /etc/hosts on every host), then run again."]


def test_a_name_missing_on_one_host():
    out = name_problems({"a": {"db": ["10.0.0.7"]}, "b": {"db": ["10.0.0.7"]}, "c": {"db": []}})
    assert out == ["names: db does not resolve on c (getent hosts db found nothing); expected 10.0.0.7 as on a, b. Fix: add db "
                   "to the DNS that host uses (or to /etc/hosts there), then run again."]


def test_a_name_resolving_differently():
    out = name_problems({"a": {"db": ["10.0.0.7"]}, "b": {"db": ["10.0.0.7"]}, "c": {"db": ["192.168.1.7"]}})
    assert out == ["names: db resolves to different addresses: 10.0.0.7 on a, b; 192.168.1.7 on c. Every host must reach the "
                   "same service. Fix: make the site's DNS and /etc/hosts agree on one address for db, then run again."]


def test_a_name_resolving_elsewhere_than_its_service_address():
    lookups = {"a": {"db": ["10.0.0.7"]}, "b": {"db": ["10.0.0.7"]}, "c": {"db": []}}
    out = name_problems(lookups, {"db": "10.0.0.8"})
    assert out == [
        "names: db resolves to 10.0.0.7 on a, b, but its services bind to 10.0.0.8 (llmops_service_address of db), the address "
        "its certificates and clients expect. Fix: make the site's DNS or /etc/hosts give db the address 10.0.0.8, or set "
        "llmops_service_address of db to the address it resolves to, then run again.",
        "names: db does not resolve on c (getent hosts db found nothing); expected 10.0.0.8 (llmops_service_address of db). "
        "Fix: add db to the DNS that host uses (or to /etc/hosts there), then run again."]
    assert name_problems({"a": {"db": ["10.0.0.8"]}}, {"db": "10.0.0.8"}) == []
    assert preflight_problems({"names": {"a": {"db": ["10.0.0.7"]}}, "addresses": {"db": "10.0.0.8"}})[0].startswith(
        "names: db resolves to 10.0.0.7 on a, but its services bind to 10.0.0.8")


SS = ('LISTEN 0 5 0.0.0.0:6379 0.0.0.0:* users:(("python3",pid=47,fd=3)) ino:1 sk:1 <->\n'
      'LISTEN 0 5 10.0.0.5:5432 0.0.0.0:* users:(("postgres",pid=90,fd=3)) ino:2 sk:2 <->\n')


def test_ports_held_by_another_program_and_not_by_our_own_service():
    ports = [{"host": "infra-1", "service": "redis", "port": 6379, "variable": "redis_port",
              "conflicts": port_conflicts(SS, 6379, "10.0.0.5", ["redis-server"])},
             {"host": "infra-1", "service": "postgres", "port": 5432, "variable": "postgres_port",
              "conflicts": port_conflicts(SS, 5432, "10.0.0.5", ["postgres"])}]
    assert port_problems(ports) == [
        "ports: infra-1: redis will listen on port 6379, but 0.0.0.0:6379 held by python3 (pid 47). Fix: stop that program "
        "(or move it), or set redis_port to a free port, then run again."]


def test_a_gpu_node_without_a_gpu():
    gpu2 = {"host": "gpu-2", "state": "no_gpu", "reason": "no NVIDIA device (vendor 10de) on the PCI bus"}
    out = gpu_problems([{"host": "gpu-1", "state": "present"}, gpu2])
    assert out == ["gpus: gpu-2 is in the group gpu_nodes but has no NVIDIA GPU (no NVIDIA device (vendor 10de) on the PCI bus). "
                   "Fix: check that the GPUs are seated and visible (lspci -nn -d 10de:), or take gpu-2 out of gpu_nodes, "
                   "then run again."]


def test_kernel_headers_checked_only_when_the_bundle_carries_some_and_a_driver_is_to_be_installed():
    hosts = [{"host": "gpu-1", "kernel": "6.1.0-18-amd64", "headers_package": "linux-headers-6.1.0-18-amd64", "state": "install"},
             {"host": "gpu-2", "kernel": "6.1.0-25-amd64", "headers_package": "linux-headers-6.1.0-25-amd64", "state": "install"},
             {"host": "gpu-3", "kernel": "6.1.0-25-amd64", "headers_package": "linux-headers-6.1.0-25-amd64", "state": "present"}]
    assert kernel_problems({"headers": [], "hosts": hosts}) == []
    assert kernel_problems({"headers": ["linux-headers-6.1.0-18-amd64"], "hosts": hosts}) == [
        "kernel: gpu-2 runs kernel 6.1.0-25-amd64, and the bundle carries kernel headers only for linux-headers-6.1.0-18-amd64, "
        "not linux-headers-6.1.0-25-amd64: DKMS could not build the NVIDIA driver. Fix: add linux-headers-6.1.0-25-amd64 to "
        "bundle_spec.packages.names and rebuild the bundle, or boot gpu-2 into a kernel the bundle has headers for, then run again."]


def test_everything_together_in_one_list_in_order():
    out = preflight_problems({"clock": [sample("b", 3600)], "names": {"a": {"ghost": []}},
                              "ports": [{"host": "a", "service": "redis", "port": 6379, "variable": "redis_port",
                                         "conflicts": ["0.0.0.0:6379 held by python3 (pid 47)"]}],
                              "gpus": [{"host": "g", "state": "no_gpu"}],
                              "kernel": {"headers": ["linux-headers-1"], "hosts": [{"host": "g", "kernel": "2",
                                                                                    "headers_package": "linux-headers-2"}]}})
    assert [p.split(":", 1)[0] for p in out] == ["clock", "names", "ports", "gpus", "kernel"]
    assert preflight_problems({}) == []


@pytest.mark.parametrize("data, skew, text", [
    ("text", 120, "expected a dict of collected data"),
    ({}, "soon", "max_skew must be a number of seconds"),
    ({"clock": [{"host": "a", "epoch": "x", "before": 1, "after": 2}]}, 120, "a clock sample needs epoch, before and after"),
])
def test_bad_input_is_refused(data, skew, text):
    with pytest.raises(AnsibleFilterError, match=re.escape(text)):
        preflight_problems(data, skew)


def test_registered():
    assert FilterModule().filters()["preflight_problems"] is preflight_problems
