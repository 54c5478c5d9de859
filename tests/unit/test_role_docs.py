"""docs/roles/*.md must be what the argument specs produce (no hand-copied variable lists)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import role_docs  # noqa: E402  pylint: disable=wrong-import-position


def test_every_role_page_is_current():
    stale = [os.path.relpath(path, role_docs.ROOT) for _role, path, text in role_docs.pages()
             if not os.path.exists(path) or open(path, encoding="utf-8").read() != text]
    assert stale == [], "run `make docs`: %s" % stale


def test_every_role_has_a_spec_and_a_page():
    roles = sorted(r for r in os.listdir(os.path.join(role_docs.ROOT, "roles")) if not r.startswith("."))
    assert [role for role, _path, _text in role_docs.pages()] == roles


def test_render_marks_required_lists_choices_and_escapes_pipes():
    text = role_docs.render("x", {"argument_specs": {"main": {
        "short_description": "Do x",
        "options": {
            "x_name": {"type": "str", "required": True, "description": "A | B, see C(x_mode)"},
            "x_mode": {"type": "str", "choices": ["a", "b"], "default": "a", "description": "Mode."},
            "x_list": {"type": "list", "elements": "str", "default": ["3600 1"], "description": ["One.", "Two."]},
        }}}})
    assert "| `x_name` | str | *required* | A \\| B, see `x_mode` |" in text
    assert "| `x_mode` | str | `a` | Mode. Choices: `a`, `b`. |" in text
    assert '| `x_list` | list of str | `["3600 1"]` | One. Two. |' in text
