# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The serving images' Debian package pins (python-runtime.packages, vllm-cpu.packages), generated from the
apt repository's current state instead of kept by hand.

  python3 serving/images/pins.py check  [FILE...]   say which pins are behind the repository, and for a list that is a
                                                    closure, which packages it lacks or holds without need; exit 1 if any
  python3 serving/images/pins.py update [FILE...]   rewrite the lists from the repository (comments kept), then check

FILE defaults to both lists next to this file. The repository is what apt on this machine is configured with
(Debian 12 with bookworm-security, where the images' packages come from): a pin's version is the package's
candidate there (`apt-cache policy`). A list whose comments carry

  # closure-of: python3.11-minimal libpython3.11-stdlib
  # left-out: dpkg perl-base tar

is the Depends/Pre-Depends closure of the first line's packages, as apt resolves it on an empty system
(`apt-get --simulate`), without the left-out packages and what only they need: `update` adds what the closure
gained and drops what it lost. Any other list keeps its packages (each chosen for a reason its comments give)
and only gets their current versions. serving/images/build.sh runs `check` before it downloads and says what is
behind; it builds the pinned versions all the same.

Standard library only; needs apt-get and apt-cache (the connected side that builds the images).
"""
import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LISTS = ("python-runtime.packages", "vllm-cpu.packages")
APT_ENV = {"LC_ALL": "C"}
NO_SOFT = ["--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"]
_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


class PinError(Exception):
    """A list or an answer of apt that cannot be used (the message names it)."""


# ---- the list file ------------------------------------------------------------------------------------------

def parse_list(text, name="list"):
    """(pins, closure_of, left_out): pins as (package, version) in file order; the two directives' package names."""
    pins, closure_of, left_out, seen = [], [], [], set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*(closure-of|left-out):\s*(.*)$", line)
            if m:
                names = m.group(2).split()
                bad = [n for n in names if not _NAME.match(n)]
                if bad or not names:
                    raise PinError("%s line %d: %s needs package names, got %r" % (name, number, m.group(1), m.group(2)))
                (closure_of if m.group(1) == "closure-of" else left_out).extend(names)
            continue
        pkg, sep, version = line.partition("=")
        if not sep or not _NAME.match(pkg) or not version or " " in version:
            raise PinError("%s line %d: %r is not a pin (package=version)" % (name, number, line))
        if pkg in seen:
            raise PinError("%s line %d: %s is pinned twice" % (name, number, pkg))
        seen.add(pkg)
        pins.append((pkg, version))
    if left_out and not closure_of:
        raise PinError("%s: left-out without closure-of" % name)
    return pins, closure_of, left_out


def render_list(text, pins):
    """The list's text with its pins replaced by ``pins``: comments and blank lines stay where they were, a pinned
    package keeps its line (with the new version) or loses it, and a new package goes after the last pin, by name."""
    new = dict(pins)
    out, last, kept = [], None, set()
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            pkg = line.partition("=")[0]
            if pkg in new:
                out.append("%s=%s" % (pkg, new[pkg]))
                kept.add(pkg)
            last = len(out)
            continue
        out.append(raw)
    added = ["%s=%s" % (p, new[p]) for p in sorted(new) if p not in kept]
    at = len(out) if last is None else last
    return "\n".join(out[:at] + added + out[at:]) + "\n"


# ---- what apt answers ---------------------------------------------------------------------------------------

def parse_policy(text):
    """``apt-cache policy A B ...`` -> {package: candidate}; a package without a candidate maps to None."""
    out, current = {}, None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1].split(":", 1)[0] if line.count(":") > 1 else line[:-1]
            out[current] = None
        elif current and line.strip().startswith("Candidate:"):
            value = line.split(":", 1)[1].strip()
            out[current] = None if value == "(none)" else value
    return out


def parse_simulate(text):
    """``apt-get --simulate install ...`` -> {package: version} of its Inst lines."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^Inst (\S+) (?:\[[^\]]*\] )?\(([^ )]+)", line)
        if m:
            out[m.group(1).split(":", 1)[0]] = m.group(2)
    return out


def parse_depends(text):
    """``apt-cache depends --recurse ...`` -> {package: set of the packages it may depend on} (every alternative
    and every provider of a virtual package: the caller keeps those apt chose)."""
    out, current = {}, None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            current = line.strip().strip("<>").split(":", 1)[0]
            out.setdefault(current, set())
            continue
        m = re.match(r"^\s+\|?(?:PreDepends|Depends):\s+<?([^>\s]+)>?", line)
        if m and current is not None:
            out[current].add(m.group(1).split(":", 1)[0])
        elif current is not None and re.match(r"^\s{4,}\S", line):  # a provider of the virtual package above
            out[current].add(line.strip().split(":", 1)[0])
    return out


def closure(roots, left_out, resolved, depends):
    """The packages of ``resolved`` (apt's choice) reachable from ``roots`` through ``depends`` without passing
    through a left-out package."""
    keep, todo, skip = set(), list(roots), set(left_out)
    while todo:
        pkg = todo.pop()
        if pkg in keep or pkg in skip or pkg not in resolved:
            continue
        keep.add(pkg)
        todo.extend(sorted(depends.get(pkg, ())))
    return keep


def _apt(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, check=False, env=dict(os.environ, **APT_ENV))
    except OSError as e:
        raise PinError("%s: %s (pins.py runs on the connected side that builds the images, with apt)" % (argv[0], e))
    if r.returncode != 0:
        raise PinError("%s failed (%d): %s" % (" ".join(argv[:3]), r.returncode, (r.stderr or r.stdout).strip()[-800:]))
    return r.stdout


class Apt(object):
    """The repository, as apt on this machine sees it."""

    def candidates(self, names):
        return parse_policy(_apt(["apt-cache", "policy"] + sorted(names)))

    def resolve(self, roots):
        return parse_simulate(_apt(["apt-get", "--simulate", "-o", "Dir::State::status=/dev/null", "-o",
                                    "Debug::NoLocking=1", "install", "--no-install-recommends"] + list(roots)))

    def depends(self, roots):
        return parse_depends(_apt(["apt-cache", "depends", "--recurse"] + NO_SOFT + list(roots)))


# ---- check and update ---------------------------------------------------------------------------------------

def plan(text, apt, name="list"):
    """What the repository says of one list: {'pins': the generated pins, 'behind': [(pkg, pinned, candidate)],
    'missing': [(pkg, candidate)] (the closure gained), 'unneeded': [pkg] (the closure lost), 'gone': [pkg]
    (no candidate at all)}."""
    pins, roots, left_out = parse_list(text, name)
    pinned = dict(pins)
    if roots:
        resolved = apt.resolve(roots)
        want = closure(roots, left_out, resolved, apt.depends(roots))
        lacking = sorted(r for r in roots if r not in resolved)
        if lacking:
            raise PinError("%s: apt resolves no %s (closure-of)" % (name, ", ".join(lacking)))
    else:
        want = set(pinned)
    cand = apt.candidates(want)
    gone = sorted(p for p in want if not cand.get(p))
    new = dict((p, cand[p]) for p in want if cand.get(p))
    return {"pins": sorted(new.items()),
            "behind": sorted((p, pinned[p], new[p]) for p in new if p in pinned and pinned[p] != new[p]),
            "missing": sorted((p, new[p]) for p in new if p not in pinned),
            "unneeded": sorted(p for p in pinned if p not in want),
            "gone": gone}


def describe(name, result):
    lines = ["%s: %s pinned %s, the repository has %s" % (name, p, old, new) for p, old, new in result["behind"]]
    lines += ["%s: %s=%s is now in the closure and not pinned" % (name, p, v) for p, v in result["missing"]]
    lines += ["%s: %s is pinned but no longer in the closure" % (name, p) for p in result["unneeded"]]
    lines += ["%s: %s has no candidate in the repository (is the source configured?)" % (name, p) for p in result["gone"]]
    return lines


def main(argv=None, apt=None):
    ap = argparse.ArgumentParser(prog="pins.py", description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("action", choices=("check", "update"))
    ap.add_argument("files", nargs="*", default=[os.path.join(HERE, n) for n in LISTS])
    a = ap.parse_args(argv)
    apt = apt or Apt()
    problems = 0
    try:
        for path in a.files:
            name = os.path.basename(path)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            result = plan(text, apt, name)
            if a.action == "update" and not result["gone"]:
                fresh = render_list(text, result["pins"])
                if fresh != text:
                    with open(path + ".tmp", "w", encoding="utf-8") as f:
                        f.write(fresh)
                    os.replace(path + ".tmp", path)
                    print("%s: updated (%d behind, %d added, %d dropped)" % (
                        name, len(result["behind"]), len(result["missing"]), len(result["unneeded"])))
                    continue
            lines = describe(name, result)
            for line in lines:
                print(line)
            if not lines:
                print("%s: every pin is the repository's current version" % name)
            problems += len(lines)
    except (PinError, OSError) as e:
        print("pins.py: %s" % e, file=sys.stderr)
        return 2
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
