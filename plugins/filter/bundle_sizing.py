# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How much room a bundle needs at each place it passes through, from the bundle spec and declared sizes."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: bundle_sizing
short_description: Size a bundle - connected disk, media, controller, registry, object store, node cache
version_added: 0.1.0
description:
  - Takes C(bundle_spec) and the sizes a site declares for what the spec names (before anything is downloaded, the
    spec alone says nothing about bytes) and returns the room each place needs, as rows and as a printable table.
  - Every model, image, chart and binary of the spec needs a declared size, and so do C(packages) (when the spec has
    that section) and C(python) (when enabled). A missing, negative or unreadable size fails with the list of what to
    declare; a size declared for something the spec does not name (a typo) fails too.
  - A size is a number of bytes, or a string with a unit - C(B), C(kB), C(MB), C(GB), C(TB) (powers of 1000, as disks
    are sold) or C(KiB), C(MiB), C(GiB), C(TiB) (powers of 1024) - such as C(141.1 GB).
  - Images are summed as declared; layers two images share are stored once in the bundle's OCI layout, so the image
    figures are an upper bound.
  - "Rows: C(connected disk) (the model sources plus the bundle directory), C(media) (the bundle's segments),
    C(controller) (the import under the inventory's C(.bundle)), C(registry) (the images in the site registry),
    C(object store) (the checkpoints), C(node cache) (per GPU node: every model served with C(load: pull), since any
    may be scheduled there)."
positional: sizes
options:
  _input:
    description: The bundle spec (C(bundle_spec), the bundle role's schema).
    type: dict
    required: true
  sizes:
    description:
      - The declared sizes (C(llmops_bundle_sizes) in the inventory). Keys C(models), C(images), C(charts), C(binaries)
        (each a dict from the model, chart or binary name, or the image reference, to a size), C(packages) and
        C(python) (a size each), and C(medium) (optional, the size of one medium, to say whether the segments fit).
    type: dict
    required: true
  serving_models:
    description:
      - "C(vllm_serving_models). Models that name a bundle checkpoint and use C(load: stream) need no node cache.
        Empty - every model of the spec is counted in the node cache."
    type: list
    elements: dict
    default: []
  segment_size:
    description: The largest segment (C(bundle_segment_size)).
    type: raw
    default: 4095MiB
  headroom:
    description: Fraction added to each figure for the recommended free space (file system overhead, a second bundle).
    type: float
    default: 0.1
"""

EXAMPLES = r"""
- name: Size the bundle of this inventory
  ansible.builtin.debug:
    msg: "{{ (bundle_spec | llmops.onprem.bundle_sizing(llmops_bundle_sizes, serving_models=vllm_serving_models)).table }}"

# llmops_bundle_sizes, beside bundle_spec in group_vars/all:
#   llmops_bundle_sizes:
#     models: {llama-3.1-8b-instruct: 16.1 GB}
#     images: {"docker.io/vllm/vllm-openai:v0.34.0": 9.6 GB}
#     packages: 350 MB
#     medium: 256 GB
"""

RETURN = r"""
_value:
  description: The sizes.
  type: dict
  contains:
    rows:
      description: One entry per place, in the order of the table.
      type: list
      elements: dict
      contains:
        place: {description: "C(connected disk), C(media), C(controller), C(registry), C(object store) or C(node cache).", type: str}
        bytes: {description: What the place holds, in bytes., type: int}
        recommended: {description: C(bytes) plus the headroom, rounded up., type: int}
        holds: {description: What is counted., type: str}
    parts: {description: "Bytes per part of the bundle: C(models), C(images), C(packages), C(python), C(charts), C(binaries).", type: dict}
    bundle_bytes: {description: The bundle directory's size., type: int}
    segments: {description: How many segments of O(segment_size) the pack writes., type: int}
    segment_size: {description: O(segment_size) in bytes., type: int}
    media:
      description: Present when the declared sizes have a C(medium).
      type: dict
      contains:
        medium_bytes: {description: One medium's size., type: int}
        segments_per_medium: {description: Whole segments one medium holds., type: int}
        count: {description: Media needed at that size., type: int}
        fits: {description: One medium holds every segment., type: bool}
    table: {description: The table as lines of text, for ansible.builtin.debug., type: list, elements: str}
"""

_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4,
    "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
_SECTIONS = (("models", "name", "model"), ("images", "ref", "image"), ("charts", "name", "chart"), ("binaries", "name", "binary"))
_WHERE = "llmops_bundle_sizes"


def parse_size(value, where):
    """Bytes from an int or a string with a unit; `where` names the value in the error."""
    if isinstance(value, bool) or value is None:
        raise AnsibleFilterError("bundle_sizing: %s is %r, not a size: give bytes (an integer) or a number with a unit, "
                                 "such as 16.1 GB or 4095 MiB" % (where, value))
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise AnsibleFilterError("bundle_sizing: %s is %s, not a size: give bytes (an integer) or a number with a "
                                     "unit, such as 16.1 GB or 4095 MiB" % (where, value))
        number, unit = Decimal(str(value)), ""
    else:
        m = _SIZE.match(str(value))
        if not m:
            if str(value).strip().startswith("-"):
                raise AnsibleFilterError("bundle_sizing: %s is %s: a size cannot be negative" % (where, value))
            raise AnsibleFilterError("bundle_sizing: %s is %r, not a size: give bytes (an integer) or a number with a "
                                     "unit, such as 16.1 GB or 4095 MiB" % (where, value))
        number, unit = Decimal(m.group(1)), m.group(2).lower()
        if unit not in _UNITS:
            raise AnsibleFilterError("bundle_sizing: %s is %r: unknown unit %r (use B, kB, MB, GB, TB, KiB, MiB, GiB "
                                     "or TiB)" % (where, value, m.group(2)))
    if number < 0:
        raise AnsibleFilterError("bundle_sizing: %s is %s: a size cannot be negative" % (where, value))
    return int(math.ceil(number * _UNITS[unit]))


def _gb(n):
    return "%.1f GB" % (n / 1000.0 ** 3)


def _declared(spec, sizes):
    """Bytes per entry of each section; every missing or unknown name is collected into one error."""
    missing, unknown, parts, detail = [], [], {}, {}
    for section, key, what in _SECTIONS:
        entries = spec.get(section) or []
        declared = sizes.get(section) or {}
        if not isinstance(declared, dict):
            raise AnsibleFilterError("bundle_sizing: %s.%s must map each %s to a size, got %s"
                                     % (_WHERE, section, what, type(declared).__name__))
        names = [e.get(key) for e in entries]
        for name in names:
            if name not in declared:
                missing.append("%s.%s[%s]" % (_WHERE, section, name))
        unknown += ["%s.%s[%s]" % (_WHERE, section, n) for n in declared if n not in names]
        detail[section] = {n: parse_size(declared[n], "%s.%s[%s]" % (_WHERE, section, n)) for n in names if n in declared}
        parts[section] = sum(detail[section].values())
    for section, needed in (("packages", bool(spec.get("packages"))), ("python", bool((spec.get("python") or {}).get("enabled")))):
        if needed and section not in sizes:
            missing.append("%s.%s" % (_WHERE, section))
        parts[section] = parse_size(sizes[section], "%s.%s" % (_WHERE, section)) if needed and section in sizes else 0
    if missing:
        raise AnsibleFilterError("bundle_sizing: no size declared for %s. Declare each in %s, beside bundle_spec (bytes or "
                                 "a number with a unit; du -sb <checkpoint> for a model, the sum of the layer sizes of "
                                 "skopeo inspect --raw for an image)" % (", ".join(missing), _WHERE))
    if unknown:
        raise AnsibleFilterError("bundle_sizing: %s declared but bundle_spec does not name %s: fix the name (a typo?) or "
                                 "remove the size" % (", ".join(unknown), "it" if len(unknown) == 1 else "them"))
    return parts, detail


def bundle_sizing(spec, sizes, serving_models=None, segment_size="4095MiB", headroom=0.1):
    if not isinstance(spec, dict):
        raise AnsibleFilterError("bundle_sizing: expected bundle_spec (a dict), got %s" % type(spec).__name__)
    if not isinstance(sizes, dict):
        raise AnsibleFilterError("bundle_sizing: %s must be a dict (models, images, charts, binaries, packages, python, "
                                 "medium), got %s" % (_WHERE, type(sizes).__name__))
    known = {section[0] for section in _SECTIONS} | {"packages", "python", "medium"}
    stray = sorted(set(sizes) - known)
    if stray:
        raise AnsibleFilterError("bundle_sizing: %s has unknown key(s) %s; the keys are %s"
                                 % (_WHERE, ", ".join(stray), ", ".join(sorted(known))))
    seg = parse_size(segment_size, "bundle_segment_size")
    if seg <= 0:
        raise AnsibleFilterError("bundle_sizing: bundle_segment_size is %s: it must be more than 0" % segment_size)
    try:
        headroom = Decimal(str(headroom))
    except (InvalidOperation, TypeError, ValueError):
        raise AnsibleFilterError("bundle_sizing: headroom is %r, not a number (0.1 adds 10%%)" % (headroom,))
    if not headroom.is_finite() or headroom < 0:
        raise AnsibleFilterError("bundle_sizing: headroom is %s: it must be 0 or more (0.1 adds 10%%)" % headroom)

    parts, detail = _declared(spec, sizes)
    bundle = sum(parts.values())
    streamed = {(m.get("checkpoint") or {}).get("name") for m in serving_models or [] if m.get("load") == "stream"}
    cached = sum(b for name, b in detail["models"].items() if name not in streamed)
    segments = int(math.ceil(bundle / float(seg))) if bundle else 0
    rows = [
        ("connected disk", parts["models"] + bundle, "the model checkpoints as downloaded plus the bundle directory"),
        ("media", bundle, "%d segment(s) of at most %s" % (segments, _gb(seg))),
        ("controller", bundle, "the verified import (<inventory>/.bundle)"),
        ("registry", parts["images"], "%d image(s) in the site registry (shared layers counted per image)" % len(detail["images"])),
        ("object store", parts["models"], "%d checkpoint(s) (a new version of the weights adds a prefix)" % len(detail["models"])),
        ("node cache", cached, "per GPU node: every model served with load: pull"),
    ]
    out = dict(parts=parts, bundle_bytes=bundle, segments=segments, segment_size=seg,
               rows=[dict(place=p, bytes=b, recommended=int(math.ceil(b * (1 + headroom))), holds=h) for p, b, h in rows])
    table = ["%-15s %12s %16s  %s" % ("place", "needs", "with %d%% spare" % round(headroom * 100), "holds")]
    table += ["%-15s %12s %16s  %s" % (r["place"], _gb(r["bytes"]), _gb(r["recommended"]), r["holds"]) for r in out["rows"]]
    if "medium" in sizes:
        medium = parse_size(sizes["medium"], "%s.medium" % _WHERE)
        per = medium // seg
        count = int(math.ceil(segments / float(per))) if per else 0
        out["media"] = dict(medium_bytes=medium, segments_per_medium=per, count=count, fits=bool(per) and segments <= per)
        if out["media"]["fits"]:
            table.append("one medium of %s holds all %d segments" % (_gb(medium), segments))
        elif per:
            table.append("a medium of %s holds %d segments: spread the pack over %d media of this size (bundle_medium_size, one run "
                         "per medium) or use one medium of at least %s" % (_gb(medium), per, count, _gb(out["rows"][1]["recommended"])))
        else:
            table.append("a medium of %s is smaller than one segment (%s)" % (_gb(medium), _gb(seg)))
    out["table"] = table
    return out


class FilterModule(object):
    """llmops.onprem bundle sizing."""

    def filters(self):
        return {"bundle_sizing": bundle_sizing}
