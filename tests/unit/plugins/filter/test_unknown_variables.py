"""unknown_variables: inventory variables named like the collection's that no role and no play reads.

The real inventories (inventories/local, inventories/example-site) and every molecule scenario's
inventory pass; a typo is named with the closest known variable.
"""
import glob
import os

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.vars.manager import VariableManager

from ansible_collections.llmops.onprem.plugins.filter.unknown_variables import FilterModule, role_variables, unknown_variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def site_variables():
    with open(os.path.join(ROOT, "playbooks", "vars", "site_variables.yml"), encoding="utf-8") as f:
        return yaml.safe_load(f)["llmops_site_variables"]


def test_a_typo_is_named_with_the_closest_known_variable():
    hostvars = {
        "localhost": {"vllm_serving_model": [], "llmops_kubconfig": "/etc/k", "inventory_hostname": "localhost"},
        "svc-1": {"redis_prot": 6380, "ansible_host": "192.0.2.10", "redis_port": 6380},
        "svc-2": {"redis_prot": 6380},
    }
    assert unknown_variables(hostvars, ["svc-1", "svc-2", "localhost"], site_variables()) == [
        "llmops_kubconfig (set for localhost; did you mean llmops_kubeconfig?)",
        "redis_prot (set for svc-1, svc-2; did you mean redis_port?)",
        "vllm_serving_model (set for localhost; did you mean vllm_serving_models?)",
    ]


def test_a_name_nothing_is_close_to_says_so():
    assert unknown_variables({"h": {"minio_zzzzzzzzzzzzzzzzzzzz": 1}}, ["h"], []) == [
        "minio_zzzzzzzzzzzzzzzzzzzz (set for h; no known variable is close)"]


def test_known_and_unprefixed_names_pass():
    hostvars = {"h": {
        "vllm_serving_models": [],                # argument spec option
        "image_mirror_check_image": "busybox",    # argument spec option
        "bundle_spec": {},                        # the bundle role's
        "bundle_import_public_key": "/k.pem",     # a longer role name than its prefix `bundle_`
        "llmops_kubeconfig": "/k",                # site-level
        "llmops_allow_unknown_variables": True,
        "ansible_become": True, "group_names": [], "airgap_work": "/w", "my_site_note": 1,
    }}
    assert unknown_variables(hostvars, ["h"], site_variables()) == []


def test_only_the_listed_hosts_are_read_and_a_missing_host_is_no_error():
    hostvars = {"a": {"redis_prot": 1}, "b": {}}
    assert unknown_variables(hostvars, ["b", "ghost"], []) == []


def test_every_role_contributes_its_spec_and_defaults():
    roles = role_variables()
    assert set(roles) == {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "roles", "*")) if os.path.isdir(p)}
    assert "packages_repo_exclusive" in roles["packages_repo"]
    assert "vllm_serving_models" in roles["vllm_serving"]


def test_hosts_must_be_a_list():
    with pytest.raises(AnsibleFilterError, match=r"^unknown_variables: hosts must be a list of inventory host names, got 'all'$"):
        unknown_variables({}, "all", [])


def test_the_filter_is_registered():
    assert FilterModule().filters()["unknown_variables"] is unknown_variables


def inventory_hostvars(path):
    """Every host's variable names as ansible-playbook sees them (inventory, group_vars, host_vars), values untemplated."""
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[path])
    manager = VariableManager(loader=loader, inventory=inventory)
    hosts = inventory.get_hosts() + [inventory.localhost]
    return {h.name: manager.get_vars(host=h, include_hostvars=False) for h in hosts}


@pytest.mark.parametrize("inventory", ["local", "example-site"])
def test_the_real_inventories_pass(inventory):
    hostvars = inventory_hostvars(os.path.join(ROOT, "inventories", inventory))
    assert len(hostvars) > 1
    assert "vllm_serving_models" in hostvars["localhost"]  # group_vars/all reached the implicit localhost
    assert unknown_variables(hostvars, sorted(hostvars), site_variables()) == []


def molecule_inventories():
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "molecule", "*", "molecule.yml"))):
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        inv = (data.get("provisioner") or {}).get("inventory") or {}
        names = set()
        for kind in ("group_vars", "host_vars"):
            for v in (inv.get(kind) or {}).values():
                names.update(v or {})
        out.append(pytest.param(names, id=os.path.basename(os.path.dirname(path))))
    return out


@pytest.mark.parametrize("names", molecule_inventories())
def test_the_molecule_inventories_pass(names):
    assert unknown_variables({"h": dict.fromkeys(names)}, ["h"], site_variables()) == []
