#!/usr/bin/env python
"""Extract the command-line flags and model architectures of one vLLM release.

Two modes:

* ``--installed`` (the one the chart is pinned with): run THIS script with the Python of an
  environment where vLLM is installed. It imports vLLM's own OpenAI-server argument parser and
  its model registry, so the list is exactly what ``python -m vllm.entrypoints.openai.api_server``
  accepts, with each flag's kind (``bare``: takes no value, ``value``, ``optional``, ``list``)
  and, where argparse restricts them, its choices. A newer vLLM's Python files (for example the
  GPU wheel, unpacked) can be put first with ``--vllm-path DIR``; they then run on that
  environment's dependencies. Usage::

    VLLM_PYTHON tests/tools/vllm_args.py --installed [--vllm-path DIR] [--out serving/vllm-args]

  It writes ``<version>.txt`` (``--flag<TAB>kind[<TAB>choices=a,b]`` per line) and
  ``<version>.architectures.txt``, and copies the flag list into the chart
  (serving/chart/files/vllm-args-<version>.txt) when ``--chart-copy`` is given.

* source mode (kept for the old 0.7.3 list, flags only, no kinds):

vLLM defines its server flags in ``vllm/engine/arg_utils.py`` (engine) and
``vllm/entrypoints/openai/cli_args.py`` (OpenAI server front end), and its supported model
architectures in ``vllm/model_executor/models/registry.py``. This script reads those files
with ``ast`` (nothing is imported, so no torch/CUDA is needed) and writes:

  serving/vllm-args/<version>.txt                 one flag per line (``--max-model-len``)
  serving/vllm-args/<version>.architectures.txt   one architecture per line

Source: a vLLM wheel (``pip download vllm==X --no-deps --only-binary=:all:
--platform manylinux1_x86_64 --python-version 3.12 -d DIR``), or a checkout/tree holding
the files (``git show vX:vllm/engine/arg_utils.py`` ...). Usage::

  python3 tests/tools/vllm_args.py --version 0.7.3 SOURCE [--out serving/vllm-args]
"""
import argparse
import ast
import hashlib
import os
import sys
import zipfile

PARSER_MODULES = ("vllm.entrypoints.common.cli_args", "vllm.entrypoints.launchers.cli_args",
                  "vllm.entrypoints.openai.cli_args")
PARSER_CLASS_MODULES = ("vllm.utils.argparse_utils", "vllm.utils")

FILES = {
    "engine": "vllm/engine/arg_utils.py",
    "frontend": "vllm/entrypoints/openai/cli_args.py",
    "registry": "vllm/model_executor/models/registry.py",
}
REGISTRY_TABLES = ("_TEXT_GENERATION_MODELS", "_EMBEDDING_MODELS", "_CROSS_ENCODER_MODELS",
                   "_MULTIMODAL_MODELS", "_SPECULATIVE_DECODING_MODELS")


def read_sources(source):
    """Return {key: (path, text)} for FILES, from a wheel/zip or a directory tree."""
    out = {}
    if os.path.isfile(source):
        with zipfile.ZipFile(source) as z:
            names = set(z.namelist())
            for key, path in FILES.items():
                if path not in names:
                    raise SystemExit("%s has no %s: not a vLLM wheel of a supported layout" % (source, path))
                out[key] = (path, z.read(path).decode("utf-8"))
    else:
        for key, path in FILES.items():
            full = os.path.join(source, path)
            if not os.path.isfile(full):
                raise SystemExit("%s has no %s: not a vLLM source tree of a supported layout" % (source, path))
            with open(full, encoding="utf-8") as fh:
                out[key] = (path, fh.read())
    return out


def flags(text):
    """Every option string literal passed to an ``add_argument(...)`` call."""
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--"):
                    found.add(arg.value)
                    # argparse.BooleanOptionalAction also accepts --no-<flag>.
                    for kw in node.keywords:
                        if kw.arg == "action" and "BooleanOptionalAction" in ast.dump(kw.value):
                            found.add("--no-" + arg.value[2:])
    return found


def architectures(text):
    archs = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if any(n in REGISTRY_TABLES for n in names) and isinstance(node.value, ast.Dict):
                archs.update(k.value for k in node.value.keys if isinstance(k, ast.Constant))
    return archs


def _first_import(names, attr):
    import importlib
    errors = []
    for name in names:
        try:
            mod = importlib.import_module(name)
        except ImportError as exc:
            errors.append("%s: %s" % (name, exc))
            continue
        if hasattr(mod, attr):
            return name, getattr(mod, attr)
        errors.append("%s: no %s" % (name, attr))
    raise SystemExit("no vLLM module provides %s (%s): extend tests/tools/vllm_args.py" % (attr, "; ".join(errors)))


def kind(action):
    """How argparse reads one option: bare (no value), value, optional (0 or 1), list (1 or more)."""
    if action.nargs == 0:
        return "bare"
    if action.nargs == "?":
        return "optional"
    if action.nargs in ("+", "*") or isinstance(action.nargs, int) and action.nargs > 1:
        return "list"
    return "value"


def installed_lists():
    """(version, {flag: line}, architectures, parser module) from the vLLM importable here."""
    import vllm
    pmod, make_arg_parser = _first_import(PARSER_MODULES, "make_arg_parser")
    parser_class = _first_import(PARSER_CLASS_MODULES, "FlexibleArgumentParser")[1]
    parser = make_arg_parser(parser_class())
    lines = {}
    for action in parser._actions:
        for opt in action.option_strings:
            if not opt.startswith("--") or opt == "--help":
                continue
            line = "%s\t%s" % (opt, kind(action))
            if action.choices is not None and not isinstance(action.choices, dict):
                line += "\tchoices=" + ",".join(str(c) for c in action.choices)
            lines[opt] = line
    from vllm.model_executor.models.registry import ModelRegistry
    archs = set(ModelRegistry.get_supported_archs())
    return vllm.__version__, lines, archs, pmod


def main_installed(a):
    if a.vllm_path:
        sys.path.insert(0, os.path.abspath(a.vllm_path))
    version, lines, archs, pmod = installed_lists()
    if len(lines) < 100 or "--model" not in lines or not archs:
        raise SystemExit("found %d flags and %d architectures in vLLM %s: the parser changed; "
                         "extend tests/tools/vllm_args.py" % (len(lines), len(archs), version))
    header = ["# vLLM %s: every option of its OpenAI API server, generated by tests/tools/vllm_args.py --installed" % version,
              "# from the installed package's own argparse (%s.make_arg_parser) and model registry." % pmod,
              "# Columns: flag, kind (bare: no value; value; optional: 0 or 1 value; list: 1 or more), choices."]
    if a.vllm_path:
        header.insert(2, "# Its Python files (the wheel, unpacked) were imported ahead of another vLLM environment's dependencies,"
                         " with VLLM_TARGET_DEVICE=%s." % os.environ.get("VLLM_TARGET_DEVICE", ""))
    os.makedirs(a.out, exist_ok=True)
    flags_text = "\n".join(header + [lines[k] for k in sorted(lines)]) + "\n"
    arch_header = [header[0].replace("every option of its OpenAI API server", "every supported model architecture"),
                   "# from the installed package's ModelRegistry.get_supported_archs()."]
    with open(os.path.join(a.out, "%s.txt" % version), "w", encoding="utf-8") as fh:
        fh.write(flags_text)
    with open(os.path.join(a.out, "%s.architectures.txt" % version), "w", encoding="utf-8") as fh:
        fh.write("\n".join(arch_header + sorted(archs)) + "\n")
    if a.chart_copy:
        os.makedirs(a.chart_copy, exist_ok=True)
        with open(os.path.join(a.chart_copy, "vllm-args-%s.txt" % version), "w", encoding="utf-8") as fh:
            fh.write(flags_text)
    print("vLLM %s: %d flags, %d architectures -> %s" % (version, len(lines), len(archs), os.path.normpath(a.out)))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", help="source mode: a vLLM wheel, or a directory holding vllm/...")
    ap.add_argument("--version", help="source mode: the vLLM version the source is (e.g. 0.7.3)")
    ap.add_argument("--installed", action="store_true", help="read the flags from the vLLM installed in this Python")
    ap.add_argument("--vllm-path", help="--installed: a directory holding vllm/ to import first (an unpacked wheel)")
    ap.add_argument("--chart-copy", help="--installed: also write vllm-args-<version>.txt into this directory")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "serving", "vllm-args"))
    a = ap.parse_args(argv)
    if a.installed:
        return main_installed(a)
    if not a.source or not a.version:
        ap.error("source mode needs SOURCE and --version (or use --installed)")
    src = read_sources(a.source)
    all_flags = flags(src["engine"][1]) | flags(src["frontend"][1])
    archs = architectures(src["registry"][1])
    if len(all_flags) < 20 or "--model" not in all_flags or not archs:
        raise SystemExit("found %d flags and %d architectures in %s: the source layout changed; "
                         "extend tests/tools/vllm_args.py" % (len(all_flags), len(archs), a.source))
    header = ["# vLLM %s, generated by tests/tools/vllm_args.py from:" % a.version]
    header += ["#   %s sha256:%s" % (path, hashlib.sha256(text.encode()).hexdigest()) for path, text in src.values()]
    os.makedirs(a.out, exist_ok=True)
    for name, items in (("%s.txt" % a.version, all_flags), ("%s.architectures.txt" % a.version, archs)):
        with open(os.path.join(a.out, name), "w", encoding="utf-8") as fh:
            fh.write("\n".join(header + sorted(items)) + "\n")
    print("vLLM %s: %d flags, %d architectures -> %s" % (a.version, len(all_flags), len(archs), os.path.normpath(a.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
