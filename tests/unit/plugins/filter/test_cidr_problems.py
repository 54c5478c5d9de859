"""cidr_problems: an allow list of networks is checked before any host is touched."""
from ansible_collections.llmops.onprem.plugins.filter.cidr_problems import FilterModule, cidr_problems


def test_good_networks_have_no_problems():
    assert cidr_problems(["10.20.0.0/16", "192.0.2.10/32", "2001:db8::/64"]) == []


def test_each_bad_entry_is_named_with_the_reason():
    assert cidr_problems(["10.1.2.0/33", "10.1.2.3/24", "10.1.2.3", "0.0.0.0/0", "::/0", "db.site"]) == [
        "'10.1.2.0/33' is not an IPv4 or IPv6 network in CIDR form",
        "'10.1.2.3/24' has host bits set; the network is 10.1.2.0/24",
        "'10.1.2.3' has no prefix length (write a single address as 10.1.2.3/32)",
        "'0.0.0.0/0' allows every address; list the site's networks instead",
        "'::/0' allows every address; list the site's networks instead",
        "'db.site' has no prefix length (write a single address as db.site/32)",
    ]


def test_not_a_list_or_empty():
    assert cidr_problems("10.0.0.0/8") == ["expected a list of CIDR networks, got '10.0.0.0/8'"]
    assert cidr_problems([]) == ["the list is empty, so no client could connect"]


def test_registered_name():
    assert FilterModule().filters()["cidr_problems"] is cidr_problems
