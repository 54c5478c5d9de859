"""The docs say what the code does: every `bundle_spec` example in docs/*.md passes the bundle role's
argument spec and carries every image the roles pull by default, every relative link in README.md and
docs/**/*.md resolves, and no doc tells a site to set `become:` as an inventory variable.

The same checks run over the example site inventory (inventories/example-site), so the example a
site copies cannot drift from the roles either.
"""
import glob
import os
import re
import textwrap

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
LINKED_DOCS = [os.path.join(ROOT, "README.md")] + DOCS

FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def _rel(path):
    return os.path.relpath(path, ROOT)


def _load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _role_defaults(role):
    return _load(os.path.join(ROOT, "roles", role, "defaults", "main.yml")) or {}


def _bundle_options():
    return _load(os.path.join(ROOT, "roles", "bundle", "meta", "argument_specs.yml"))["argument_specs"]["main"]["options"]


def _strip_code(text):
    """Markdown without fenced blocks (links in code are not links)."""
    return FENCE.sub("", text)


def yaml_blocks(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for m in FENCE.finditer(text):
        if m.group(2) in ("yaml", "yml"):
            line = text.count("\n", 0, m.start()) + 1
            yield line, textwrap.dedent(m.group(3))


def bundle_spec_examples():
    out = []
    for doc in DOCS:
        for line, block in yaml_blocks(doc):
            data = yaml.safe_load(block)
            if isinstance(data, dict) and "bundle_spec" in data:
                out.append(pytest.param(data, id="%s:%d" % (_rel(doc), line)))
    return out


def default_images(overrides):
    """The images the roles pull unless the inventory names others: each role default ending in
    `_image` that holds a reference, with the inventory's value where it sets one."""
    images = {}
    for role in sorted(os.listdir(os.path.join(ROOT, "roles"))):
        if not os.path.isfile(os.path.join(ROOT, "roles", role, "defaults", "main.yml")):
            continue
        for name, value in _role_defaults(role).items():
            if name.endswith("_image"):
                value = overrides.get(name, value)
                if isinstance(value, str) and value and "{{" not in value:
                    images[name] = value
    # The per-node pull check has no default image (image_mirror_check_image: ""): an example must
    # name one, as the lab does, or the check is skipped.
    check = overrides.get("image_mirror_check_image") or _load(
        os.path.join(ROOT, "inventories", "local", "group_vars", "all", "cluster.yml"))["image_mirror_check_image"]
    images["image_mirror_check_image"] = check
    return images


def spec_problems(spec, overrides=None):
    """What is wrong with one bundle_spec example, as sentences (empty: nothing)."""
    overrides = overrides or {}
    problems = []
    result = ArgumentSpecValidator(_bundle_options()).validate({"bundle_dir": "/srv/bundles/site", "bundle_spec": spec})
    problems += ["argument spec: %s" % m for m in result.error_messages]
    refs = {i.get("ref") for i in spec.get("images") or []}
    for var, ref in sorted(default_images(overrides).items()):
        if ref not in refs:
            problems.append("images lacks %s (%s)" % (ref, var))
    engine = overrides.get("vllm_serving_engine_image") or _role_defaults("vllm_serving")["vllm_serving_engine_image"]
    vllm = str((spec.get("versions") or {}).get("vllm", ""))
    if vllm and not engine.endswith(":v" + vllm):
        problems.append("versions.vllm is %s but the engine image is %s" % (vllm, engine))
    for section in ("charts", "models", "binaries"):
        for item in spec.get(section) or []:
            path = item.get("path")
            if path and not (os.path.isabs(path) or path.startswith("{{")):
                problems.append("%s %s: path %s is relative; the bundle role would look for it under its own files/"
                                % (section, item.get("name"), path))
    wanted = set(_role_defaults("bundle_packages")["bundle_packages_names"])
    if spec.get("packages"):
        missing = sorted(wanted - set(spec["packages"].get("names") or []))
        if missing:
            problems.append("packages.names lacks %s (the roles install them)" % ", ".join(missing))
    return problems


@pytest.mark.parametrize("example", bundle_spec_examples())
def test_bundle_spec_example_matches_the_roles(example):
    overrides = {k: v for k, v in example.items() if k != "bundle_spec"}
    assert spec_problems(example["bundle_spec"], overrides) == []


def test_docs_have_a_bundle_spec_example():
    assert bundle_spec_examples(), "docs/airgap.md should show a bundle_spec example"


def test_the_checker_catches_the_old_example():
    """The example docs/airgap.md carried before: every defect is named."""
    old = {
        "name": "site-a-2026-11",
        "versions": {"vllm": "0.6.3", "model_engine": "0.0.0b33"},
        "images": [{"ref": "public.ecr.aws/b2z8n5q1/vllm:v0.6.3"}, {"ref": "docker.io/library/busybox:1.36"}],
        "charts": [{"name": "llmops-serving", "path": "serving/chart"}],
        "models": [{"name": "llama-3-8b-instruct", "path": "/data/checkpoints/llama-3-8b-instruct", "bytes": 1}],
    }
    problems = spec_problems(old)
    assert "images lacks docker.io/vllm/vllm-openai:v0.34.0 (vllm_serving_engine_image)" in problems
    assert "images lacks localhost/llmops/model-pull:0.1.0 (vllm_serving_downloader_image)" in problems
    assert "versions.vllm is 0.6.3 but the engine image is docker.io/vllm/vllm-openai:v0.34.0" in problems
    assert ("charts llmops-serving: path serving/chart is relative; the bundle role would look for it under its own files/"
            in problems)
    assert "argument spec: bundle_spec.models.bytes. Supported parameters include: name, path, require_tokenizer." in problems


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def _anchors(path):
    with open(path, encoding="utf-8") as f:
        text = _strip_code(f.read())
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def link_problems(path):
    with open(path, encoding="utf-8") as f:
        text = _strip_code(f.read())
    problems = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, anchor = (target.split("#", 1) + [""])[:2]
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(dest):
            problems.append("%s: link %s: no such file" % (_rel(path), target))
        elif anchor and dest.endswith(".md") and anchor not in _anchors(dest):
            problems.append("%s: link %s: no heading with that anchor" % (_rel(path), target))
    # A file named in code (`research/x.md`, `docs/y.md`) must exist too: it reads as a reference.
    for span in CODE_SPAN.findall(text):
        if re.fullmatch(r"[\w.-]+(/[\w.-]+)+\.md", span):
            here = os.path.join(os.path.dirname(path), span)
            if not (os.path.exists(os.path.join(ROOT, span)) or os.path.exists(here)):
                problems.append("%s: names %s, which does not exist" % (_rel(path), span))
    return problems


@pytest.mark.parametrize("doc", LINKED_DOCS, ids=_rel)
def test_relative_links_resolve(doc):
    assert link_problems(doc) == []


def test_the_link_checker_catches_a_missing_file_and_anchor(tmp_path):
    doc = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading\n", encoding="utf-8")
    doc.write_text("[a](there.md) [b](missing.md) [c](there.md#a-heading) [d](there.md#nope) "
                   "see `research/airgap-anchors.md`\n", encoding="utf-8")
    assert link_problems(str(doc)) == [
        "%s: link missing.md: no such file" % _rel(str(doc)),
        "%s: link there.md#nope: no heading with that anchor" % _rel(str(doc)),
        "%s: names research/airgap-anchors.md, which does not exist" % _rel(str(doc)),
    ]


BECOME = re.compile(r"(?<![\w.])become\s*:")


def become_problems(path):
    """`become:` is a play/task keyword; in an inventory Ansible ignores it (the variable is ansible_become)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    problems = []
    for m in FENCE.finditer(text):
        block = m.group(3)
        if BECOME.search(block) and not re.search(r"^\s*-?\s*(hosts|tasks|roles|name)\s*:", block, re.M):
            problems.append("%s:%d: a YAML block sets become: outside a play" % (_rel(path), text.count("\n", 0, m.start()) + 1))
    for span in CODE_SPAN.findall(_strip_code(text)):
        if BECOME.search(span):
            problems.append("%s: `%s` (the inventory variable is ansible_become)" % (_rel(path), span))
    return problems


@pytest.mark.parametrize("doc", LINKED_DOCS, ids=_rel)
def test_no_doc_sets_become_as_an_inventory_variable(doc):
    assert become_problems(doc) == []


def test_the_become_check_catches_the_old_install_page(tmp_path):
    doc = tmp_path / "install.md"
    doc.write_text("Connection settings (`ansible_host`, `ansible_user`, `become: true`); `ansible_become: true` is right.\n",
                   encoding="utf-8")
    assert become_problems(str(doc)) == ["%s: `become: true` (the inventory variable is ansible_become)" % _rel(str(doc))]


def test_the_example_site_bundle_spec_matches_the_roles():
    """inventories/example-site: the same checks, with the inventory's own image variables."""
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "inventories", "example-site", "group_vars", "all", "*.yml"))):
        found.update(_load(path) or {})
    spec = found.pop("bundle_spec")
    assert spec_problems(spec, found) == []
    assert {m["name"] for m in spec["models"]} == {m["checkpoint"]["name"] for m in found["vllm_serving_models"]}
