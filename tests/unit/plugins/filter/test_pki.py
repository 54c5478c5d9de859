"""pki_sans: the SAN list a service certificate gets from the inventory."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.pki import FilterModule, pki_sans

HOSTVARS = {
    "infra-1": {"ansible_host": "infra-1", "ansible_facts": {"default_ipv4": {"address": "10.89.0.2"}}},
    "infra-2": {"ansible_host": "192.0.2.20", "llmops_service_address": "198.51.100.7"},
    "gpu-1": {"ansible_host": "gpu-1.site.internal"},
}


def test_names_and_addresses_of_each_host_in_order():
    assert pki_sans(None, ["infra-1", "infra-2"], HOSTVARS) == [
        "DNS:infra-1", "IP:10.89.0.2", "DNS:infra-2", "IP:192.0.2.20", "IP:198.51.100.7"]


def test_fqdn_ansible_host_becomes_a_dns_entry_lowercased():
    assert pki_sans(None, ["gpu-1"], {"gpu-1": {"ansible_host": "GPU-1.Site.Internal"}}) == [
        "DNS:gpu-1", "DNS:gpu-1.site.internal"]


def test_extra_entries_are_appended_once():
    out = pki_sans(None, ["infra-1"], HOSTVARS, ["DNS:redis.site.internal", "IP:10.89.0.2", "IP:2001:db8::1"])
    assert out == ["DNS:infra-1", "IP:10.89.0.2", "DNS:redis.site.internal", "IP:2001:db8::1"]


def test_unknown_host_is_named_with_the_variable_and_the_fix():
    with pytest.raises(AnsibleFilterError) as err:
        pki_sans(None, ["infra-1", "ghost-9"], HOSTVARS)
    assert str(err.value) == (
        "pki_cert_hosts names 'ghost-9', which is not in the inventory; add it to the inventory "
        "or remove it from pki_cert_hosts")


def test_several_unknown_hosts_and_a_custom_variable_name():
    with pytest.raises(AnsibleFilterError, match=r"^redis_tls_cert_hosts names 'a', 'b', which are not in the inventory"):
        pki_sans(None, ["a", "b"], HOSTVARS, varname="redis_tls_cert_hosts")


def test_a_string_instead_of_a_list_is_refused():
    with pytest.raises(AnsibleFilterError, match="must be a list of inventory host names"):
        pki_sans(None, "infra-1", HOSTVARS)


@pytest.mark.parametrize("extra, message", [
    ("redis.site.internal", "must look like 'DNS:name' or 'IP:address'"),
    ("URI:https://x", "must look like 'DNS:name' or 'IP:address'"),
    ("IP:not-an-ip", "has kind IP but 'not-an-ip' is DNS"),
    ("DNS:10.0.0.1", "has kind DNS but '10.0.0.1' is IP"),
    ("DNS:bad name", "is neither a DNS name nor an IP address"),
])
def test_malformed_extra_entries_are_refused(extra, message):
    with pytest.raises(AnsibleFilterError, match=message.replace("(", r"\(")):
        pki_sans(None, ["infra-1"], HOSTVARS, [extra])


def test_registered_under_its_name():
    assert FilterModule().filters()["pki_sans"] is pki_sans
