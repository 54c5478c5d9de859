"""galaxy.yml says what the collection needs, and the code and the bundle agree with it.

Every collection a role, playbook or plugin names by FQCN is declared in galaxy.yml's
`dependencies`; every declared one is used; the versions the controller's Ansible carries
(the ones the tests run and the bundle ships) meet the declared floors; and the bundle's
default list of dependency collections (roles/bundle_python) is the declared one, read from
galaxy.yml in a checkout and from MANIFEST.json in an installed copy.
"""
import json
import os
import re

import pytest
import yaml
from ansible.galaxy.dependency_resolution.versioning import meets_requirements
from ansible.template import Templar, trust_as_template
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FQCN = re.compile(r"\b([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*\b")
# Names that look like FQCNs but are not collections (Python modules, this collection).
NOT_DEPENDENCIES = {"ansible.builtin", "ansible.module_utils", "ansible.plugins", "ansible.errors",
                    "ansible.parsing", "ansible.template", "ansible.utils", "ansible.galaxy",
                    "ansible.executor", "ansible.inventory", "ansible.vars", "ansible.config",
                    "ansible.playbook", "ansible.cli", "ansible.release", "ansible.constants",
                    "ansible.collections", "ansible_collections.llmops", "llmops.onprem"}


def galaxy():
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def used_collections():
    used = {}
    for top in ("roles", "playbooks", "plugins"):
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if not name.endswith((".yml", ".yaml", ".py", ".j2")):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                for m in FQCN.finditer(text):
                    coll = "%s.%s" % m.groups()
                    if coll in NOT_DEPENDENCIES or m.group(1) in ("ansible_collections", "os", "sys"):
                        continue
                    # Python module paths (e.g. ansible_collections.x.y) and dotted attributes
                    # are not FQCNs; collections have a known namespace shape.
                    if m.group(1) not in ("community", "kubernetes", "ansible", "containers",
                                          "amazon", "cloud", "netbox", "awx", "redhat"):
                        continue
                    used.setdefault(coll, os.path.relpath(path, ROOT))
    return used


def installed_version(fqcn):
    import ansible_collections  # the `ansible` package's collections

    for base in ansible_collections.__path__:
        manifest = os.path.join(base, *fqcn.split("."), "MANIFEST.json")
        if os.path.exists(manifest):
            with open(manifest, encoding="utf-8") as f:
                return json.load(f)["collection_info"]["version"]
    return None


def test_every_collection_the_code_uses_is_declared_and_every_declared_one_is_used():
    declared = set(galaxy()["dependencies"])
    used = used_collections()
    assert sorted(set(used) - declared) == [], "used but not in galaxy.yml dependencies: %s" % {
        c: used[c] for c in set(used) - declared}
    assert sorted(declared - set(used)) == [], "declared in galaxy.yml but used nowhere"


@pytest.mark.parametrize("fqcn", sorted(galaxy()["dependencies"]))
def test_the_controller_carries_a_version_that_meets_the_floor(fqcn):
    version = installed_version(fqcn)
    assert version, "%s is not installed with the controller's Ansible" % fqcn
    assert meets_requirements(version, galaxy()["dependencies"][fqcn]), (fqcn, version)


def _bundle_default(src):
    with open(os.path.join(ROOT, "roles/bundle_python/defaults/main.yml"), encoding="utf-8") as f:
        expr = yaml.safe_load(f)["bundle_python_collections"]
    init_plugin_loader()
    loader = DataLoader()
    templar = Templar(loader=loader, variables={"bundle_python_collection_src": src})
    return templar.template(trust_as_template(expr))


def test_the_bundle_ships_the_declared_dependencies_from_a_checkout():
    assert _bundle_default(ROOT) == sorted(galaxy()["dependencies"])


def test_the_bundle_ships_the_declared_dependencies_from_an_installed_copy(tmp_path):
    # An installed collection has MANIFEST.json (collection_info.dependencies), no galaxy.yml.
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"collection_info": {
        "namespace": "llmops", "name": "onprem", "version": "0.1.0",
        "dependencies": {"kubernetes.core": ">=6.0.0", "community.crypto": ">=3.0.0"}}}))
    assert _bundle_default(str(tmp_path)) == ["community.crypto", "kubernetes.core"]


def _pinned(lock, name):
    with open(os.path.join(ROOT, lock), encoding="utf-8") as f:
        for line in f:
            if line.startswith(name + "=="):
                return line.split("==", 1)[1].split()[0].strip()
    raise AssertionError("%s pins no %s" % (lock, name))


def test_requires_ansible_is_the_floor_the_floor_run_tests_and_the_bundle_ships():
    """The tests run the dev lock's ansible-core, which the bundle ships for Python 3.12+; the floor is exactly the
    ansible-core of the 3.11 closure, which the bundle ships for Debian 12 and the sanity layer's floor run uses."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    with open(os.path.join(ROOT, "meta/runtime.yml"), encoding="utf-8") as f:
        spec = SpecifierSet(yaml.safe_load(f)["requires_ansible"])
    tested = Version(_pinned("requirements-dev.lock", "ansible-core"))
    shipped = Version(_pinned("bundle/requirements-controller.lock", "ansible-core"))
    floor_run = Version(_pinned("bundle/requirements-controller-py311.lock", "ansible-core"))
    assert tested == shipped, "the tests run ansible-core %s, the bundle ships %s" % (tested, shipped)
    assert tested in spec and floor_run in spec
    floors = [Version(s.version) for s in spec if s.operator == ">="]
    assert floors, "requires_ansible has no >= floor: %s" % spec
    # A floor below the floor run's core would promise what no test runs.
    assert floors == [floor_run], "requires_ansible %s: the floor run (.venv-floor) uses %s; keep them together" % (spec, floor_run)
