# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The site's two read-outs, from one set of data: the verification report (playbooks/verify.yml, as JSON and as
a self-contained HTML page) and the end-of-run summary table of site.yml (roles/site_summary).

- ``build(lines, ...)`` turns the verify role's check lines (stage, check, status, detail, fix) into the report
  document (schema ``llmops.onprem/verify-report/v1``); ``render_html(report)`` renders it as one HTML page with
  inline CSS only: no script, no link, no URL of its own; every value is HTML-escaped.
- ``stage_rows(...)`` is the one source of the per-stage rows (stage, state, where things are) that the summary
  prints as a table (``text_table``) and the report carries in its ``site`` table.

Private to this collection: the API may change without notice.
"""

from __future__ import annotations

import html
import json
import re

SCHEMA = "llmops.onprem/verify-report/v1"
STATUSES = ("ok", "warn", "fail", "skipped")
# The order of site.yml's stages (docs/architecture.md); a stage not listed sorts after them, by name.
STAGE_ORDER = ("preflight", "bundle_import", "packages_repo", "pki", "redis", "registry", "image_mirror", "nvidia_driver",
               "postgres", "minio", "checkpoints", "cluster_secrets", "gpu_operator", "model_engine", "vllm_serving",
               "prune", "summary", "verify")


class ReportError(ValueError):
    """A check line that the report cannot hold (the message names it)."""


def _text(value):
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "; ".join(_text(v) for v in value)
    return str(value)


def check_line(raw, index=0):
    """One check line, normalised: stage, check, status, detail, fix (a fix only on a failing or warning line)."""
    if not isinstance(raw, dict):
        raise ReportError("check line %d is not a mapping: %r" % (index, raw))
    out = dict((k, _text(raw.get(k))) for k in ("stage", "check", "status", "detail", "fix"))
    for k in ("stage", "check", "status"):
        if not out[k]:
            raise ReportError("check line %d has no %s: %r" % (index, k, raw))
    if out["status"] not in STATUSES:
        raise ReportError("check line %d (%s / %s) has status %r; one of %s"
                          % (index, out["stage"], out["check"], out["status"], ", ".join(STATUSES)))
    if out["status"] == "fail" and not out["fix"]:
        raise ReportError("check line %d (%s / %s) fails without a fix" % (index, out["stage"], out["check"]))
    if out["status"] in ("ok", "skipped"):
        out["fix"] = ""
    return out


def _stage_key(stage):
    return (STAGE_ORDER.index(stage), "") if stage in STAGE_ORDER else (len(STAGE_ORDER), stage)


def build(lines, site="", generated="", stages=None):
    """The report document: every check line grouped by stage (site.yml's order), counts, ok, and the per-stage
    table of the site (``stage_rows``' rows) when given."""
    norm = [check_line(x, i) for i, x in enumerate(lines or [])]
    by_stage = {}
    for x in norm:
        by_stage.setdefault(x["stage"], []).append(x)
    counts = dict((s, sum(1 for x in norm if x["status"] == s)) for s in STATUSES)
    return {
        "schema": SCHEMA,
        "site": _text(site),
        "generated": _text(generated),
        "ok": counts["fail"] == 0,
        "counts": counts,
        "stages": [{"stage": s, "ok": all(x["status"] != "fail" for x in by_stage[s]), "lines": by_stage[s]}
                   for s in sorted(by_stage, key=_stage_key)],
        "site_stages": [dict((k, _text(r.get(k))) for k in ("stage", "state", "where")) for r in (stages or [])],
    }


def failures(report):
    """``stage / check: detail Fix: fix`` for every failing line."""
    return ["%s / %s: %s Fix: %s" % (x["stage"], x["check"], x["detail"], x["fix"])
            for s in report["stages"] for x in s["lines"] if x["status"] == "fail"]


_CSS = """
body{font-family:sans-serif;margin:24px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:22px 0 6px}
p.meta{color:#59636e;margin:0 0 12px}
.banner{padding:10px 14px;font-weight:bold;color:#fff;border-radius:4px;display:inline-block}
.banner.ok{background:#1a7f37}
.banner.fail{background:#cf222e}
table{border-collapse:collapse;width:100%;margin:0 0 8px;table-layout:fixed}
th.status{width:80px}
th.check{width:22%}
th.fix{width:30%}
th,td{border:1px solid #d1d9e0;padding:5px 8px;text-align:left;vertical-align:top;font-size:14px}
th{background:#f6f8fa}
td.status{font-weight:bold;color:#fff;width:70px;text-align:center}
tr.ok td.status{background:#1a7f37}
tr.fail td.status{background:#cf222e}
tr.warn td.status{background:#9a6700}
tr.skipped td.status{background:#818b98}
tr.fail td{background:#ffebe9}
tr.fail td.status{background:#cf222e}
td.fix{font-weight:bold}
code,pre{font-family:monospace;white-space:pre-wrap;word-break:break-word}
"""


def _e(value):
    return html.escape(_text(value), quote=True)


_TABLE_HEAD = ('<table><thead><tr><th class="status">status</th><th class="check">check</th><th>detail</th>'
               '<th class="fix">fix</th></tr></thead><tbody>')


def _row(x, check):
    return ('<tr class="%s"><td class="status">%s</td><td>%s</td><td><code>%s</code></td><td class="fix">%s</td></tr>'
            % (_e(x["status"]), _e(x["status"]), _e(check), _e(x["detail"]), _e(x["fix"])))


def render_html(report):
    """One self-contained HTML page: the red lines first (To fix), then a table per stage, a red or green status cell
    per line, the fix on every red line. Inline CSS only; no script, no link, no image, no URL of its own; every value is escaped."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>llmops.onprem site verification: %s</title>" % _e(report.get("site")),
           "<style>%s</style></head><body>" % _CSS.strip(),
           "<h1>Site verification: %s</h1>" % _e(report.get("site") or "-"),
           '<p class="meta">%s - %s ok, %s warning(s), %s failed, %s skipped</p>' % (
               _e(report.get("generated")), *(_e(report["counts"][s]) for s in ("ok", "warn", "fail", "skipped"))),
           '<div class="banner %s">%s</div>' % (
               "ok" if report["ok"] else "fail",
               "All checks passed" if report["ok"] else "%s check(s) failed: see the fix on each red line" % _e(report["counts"]["fail"]))]
    red = [x for s in report["stages"] for x in s["lines"] if x["status"] == "fail"]
    if red:
        out.append("<h2>To fix</h2>")
        out.append(_TABLE_HEAD.replace("<th class=\"check\">check</th>", "<th class=\"check\">stage / check</th>"))
        out.extend(_row(x, "%s / %s" % (x["stage"], x["check"])) for x in red)
        out.append("</tbody></table>")
    for s in report["stages"]:
        out.append('<h2 id="stage-%s">%s</h2>' % (_e(s["stage"]), _e(s["stage"])))
        out.append(_TABLE_HEAD)
        out.extend(_row(x, x["check"]) for x in s["lines"])
        out.append("</tbody></table>")
    if report.get("site_stages"):
        out.append("<h2>Stages of the site</h2>")
        out.append('<table><thead><tr><th class="check">stage</th><th>state</th><th>where</th></tr></thead><tbody>')
        for r in report["site_stages"]:
            out.append("<tr><td>%s</td><td>%s</td><td><code>%s</code></td></tr>" % (_e(r["stage"]), _e(r["state"]), _e(r["where"])))
        out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---- the per-stage rows of the summary and of the report ---------------------------------------------------

def _where(stage, rec):
    """Where a stage's record says its things are (one short line); empty when the record says nothing."""
    rec = rec if isinstance(rec, dict) else {}
    g = rec.get
    if stage == "bundle_import":
        return "%s (from %s)" % (g("dir", "-"), g("src", "-")) if rec else ""
    if stage == "packages_repo":
        repos = g("repositories") or {}
        return "%d host(s); %s" % (len(g("hosts") or {}), ", ".join(
            "%s: %d package(s)" % (d, len(p or {})) for d, p in sorted(repos.items()))) if rec else ""
    if stage == "pki":
        return "CA %s (hosts: %s)" % (g("ca_file", "-"), g("hosts_ca_file", "-")) if rec else ""
    if stage in ("redis", "registry"):
        return "%s on %s" % (g("url", "-"), g("inventory_host", "-")) if rec else ""
    if stage == "postgres":
        return "%s:%s db %s on %s" % (g("host", "-"), g("port", "-"), g("database", "-"), g("inventory_host", "-")) if rec else ""
    if stage == "minio":
        b = g("buckets") or {}
        return "%s, buckets %s" % (g("s3_endpoint_url", "-"), ", ".join(_text(v) for _k, v in sorted(b.items()))) if rec else ""
    if stage == "image_mirror":
        return "%d image(s) in %s" % (len(g("images") or []), g("registry", "-")) if rec else ""
    if stage == "checkpoints":
        return ", ".join("s3://%s/%s" % (c.get("bucket"), c.get("prefix")) for c in g("synced") or [])
    if stage == "cluster_secrets":
        return "Secrets in namespace %s (%d)" % (g("namespace", "-"), len(g("secrets") or [])) if rec else ""
    if stage == "nvidia_driver":
        return ", ".join("%s: %s" % (h, (v or {}).get("state", "-")) for h, v in sorted((g("hosts") or {}).items()))
    if stage == "gpu":
        return ", ".join("%s: %s x %s" % (n.get("node"), n.get("count"), n.get("product")) for n in g("nodes") or [])
    if stage == "preflight":
        return "%d problem(s), %d destination(s) planned" % (len(g("problems") or []), len(g("capacity") or [])) if rec else ""
    if stage == "model_engine":
        return "%s (namespace %s)" % (g("gateway_url", "-"), g("namespace", "-")) if rec else ""
    if stage == "vllm_serving":
        return ", ".join("%s at %s" % (e.get("model"), e.get("url")) for e in g("endpoints") or [])
    return ""


def kept_from_earlier(records):
    """What earlier bundles left on the site that the current one no longer names, as the stage prune's row says it
    (one short line; empty when nothing is kept): the images and checkpoint prefixes the stages' records list as
    ``superseded``."""
    records = records if isinstance(records, dict) else {}
    images = (records.get("image_mirror") or {}).get("superseded") or []
    prefixes = (records.get("checkpoints") or {}).get("superseded") or []
    if not images and not prefixes:
        return ""
    return "kept from earlier bundles: %d image(s)%s, %d checkpoint prefix(es)%s" % (
        len(images), " (%s)" % ", ".join(str(i).split("@", 1)[0] for i in images) if images else "",
        len(prefixes), " (%s)" % ", ".join(str((p or {}).get("prefix")) for p in prefixes) if prefixes else "")


# A stage whose record is a reading of its run (not a hand-off, never in the state file): never "changed".
_READINGS = ("preflight",)
# A stage whose record is kept under another name.
_RECORD_OF = {"gpu_operator": "gpu"}
# Values of a record that are readings of the run that wrote it (bytes moved, seconds waited; in check mode 0 or
# none), not of what the site holds: they differ from run to run, so they are no change (stage_rows' "changed",
# record_changes). Stage to the keys, at any depth of its record.
_PER_RUN = {"checkpoints": ("bytes_copied", "bytes_uploaded", "copied", "read_back", "uploaded"),
            "image_mirror": ("bytes_moved",),
            "vllm_serving": ("seconds", "steps")}


def _without(value, keys):
    if isinstance(value, dict):
        return dict((k, _without(v, keys)) for k, v in value.items() if k not in keys)
    if isinstance(value, (list, tuple)):
        return [_without(v, keys) for v in value]
    return value


def _stable(stage, rec):
    """A stage's record without its values of the run (``_PER_RUN``): what a change is measured on."""
    keys = _PER_RUN.get(stage)
    return _without(rec, keys) if keys and rec is not None else rec


def stable_records(records):
    """The stages' records without their values of the run (``_PER_RUN``): what the site's state file keeps, so that a
    run that changes nothing leaves the file as it was."""
    if not isinstance(records, dict):
        raise ReportError("the records must be a mapping of stage name to record, got %r" % (records,))
    return dict((key, _stable(key, rec)) for key, rec in records.items())


def stage_rows(stages, records=None, before=None, skipped=None, selected=None, where=None, states=None, this_run=True):
    """One row per stage: ``stage``, ``state`` and ``where``.

    ``stages`` are row names: a stage, or a stage and its part (``image_mirror (push)``); its first word names the
    stage and its record. ``records`` are the stages' records now (llmops_site), ``before`` those the run started from
    (the state file as the first play loaded it), ``skipped`` row to the reason it did not run, ``selected`` the rows
    this run's tags select (None: all), ``where`` row to a location that overrides the record's, ``states`` row to a
    state that overrides the computed one.

    state with ``this_run``: ``skipped: <reason>``; ``not run (not selected by the tags)``; ``changed`` when the
    stage's record differs from the one the run started with (a first run, or a new value; its values of the run,
    ``_PER_RUN``, aside: ``site_changes`` says what changed); ``done`` otherwise (the record is the same, or the stage
    ran and records nothing). Without ``this_run`` (a report read any time):
    ``recorded`` (the stage has a record), else ``skipped: <reason>`` or ``no record``. The stage ``prune`` keeps no
    record: its row says what the other stages still list as superseded (``kept_from_earlier``), and read any time its
    state is ``kept`` or ``clean``."""
    records, before, skipped, where, states = records or {}, before or {}, skipped or {}, where or {}, states or {}
    rows = []
    for stage in stages:
        base = stage.split(" ", 1)[0]
        key = _RECORD_OF.get(base, base)
        rec = records.get(key)
        if states.get(stage):
            state = states[stage]
        elif key == "prune" and not this_run:
            # The stage keeps no record: what it left is what the other stages' records still list as superseded.
            state = "kept" if kept_from_earlier(records) else "clean"
        elif not this_run and rec is not None:
            state = "recorded"
        elif skipped.get(stage):
            state = "skipped: %s" % skipped[stage]
        elif not this_run:
            state = "no record"
        elif selected is not None and stage not in selected:
            state = "not run (not selected by the tags)" + ("; recorded by an earlier run" if rec is not None else "")
        elif rec is not None and key not in _READINGS and _stable(key, before.get(key)) != _stable(key, rec):
            state = "changed"
        else:
            state = "done"
        found = (kept_from_earlier(records) or "nothing left from earlier bundles") if key == "prune" else _where(key, rec)
        rows.append({"stage": stage, "state": state, "where": _text(where.get(stage)) or found or "-"})
    return rows


def text_table(rows, columns=("stage", "state", "where")):
    """Rows (dicts) as aligned text lines: a header, then one line per row (the last column is not padded)."""
    cells = [list(columns)] + [[_text(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns) - 1)]
    return ["  ".join([r[i].ljust(widths[i]) for i in range(len(columns) - 1)] + [r[-1]]).rstrip() for r in cells]


# ---- what changed in a stage's record (the summary's change report of an upgrade) ----------------------------

# The field that names an element of a list of mappings (the first one every element has, with distinct values).
IDENTITY_KEYS = ("name", "ref", "prefix", "stage", "path", "node")
# At most this many changes per stage, then "and N more".
CHANGES_CAP = 8
_LONG = 60
_HEX64 = re.compile(r"(?<![0-9a-fA-F])([0-9a-fA-F]{12})[0-9a-fA-F]{52}(?![0-9a-fA-F])")


def short_value(value):
    """A value as a change line shows it: a sha256 digest (64 hex, also inside a reference) cut to 12 hex and ``…``,
    anything else longer than 60 characters cut in the middle (its first 24 and last 35, ``…`` between); null, true
    and false as in JSON; a mapping or list as compact JSON (then cut)."""
    if value is None or isinstance(value, bool):
        text = json.dumps(value)
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    elif isinstance(value, str):
        text = value if value else '""'
    else:
        text = str(value)
    text = _HEX64.sub("\\1\u2026", text)
    # Both ends stay: a path's or a reference's start and its last part (the file, the tag).
    return text if len(text) <= _LONG else text[:_LONG // 2 - 6] + "\u2026" + text[-(_LONG // 2 + 5):]


def _raw(value):
    return json.dumps(value, sort_keys=True, default=str)


def _scalar(value):
    return not isinstance(value, (dict, list, tuple))


def _join(path, key):
    return "%s.%s" % (path, key) if path else "%s" % (key,)


def _sort_key(value):
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def _identity(before, after):
    """The field that names the elements of two lists of mappings, or None (they are then matched by index)."""
    items = list(before) + list(after)
    for key in IDENTITY_KEYS:
        if all(key in x and _scalar(x[key]) for x in items) and all(
                len(set(json.dumps(x[key], sort_keys=True) for x in side)) == len(side) for side in (before, after)):
            return key
    return None


def _added(path, value):
    return "%s added: %s" % (path, short_value(value)) if _scalar(value) else "%s added" % path


def _removed(path, value):
    return "%s removed (was %s)" % (path, short_value(value)) if _scalar(value) else "%s removed" % path


def _changes(path, before, after, out):
    if before == after:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for k in sorted(set(before) | set(after), key=_sort_key):
            p = _join(path, k)
            if k not in before:
                out.append(_added(p, after[k]))
            elif k not in after:
                out.append(_removed(p, before[k]))
            else:
                _changes(p, before[k], after[k], out)
        return
    if isinstance(before, (list, tuple)) and isinstance(after, (list, tuple)):
        if all(_scalar(x) for x in list(before) + list(after)):
            # A list of scalars is a set: what came, what went.
            b, a = dict((_raw(x), x) for x in before), dict((_raw(x), x) for x in after)
            if set(a) == set(b):
                # Only the order or the duplicates differ.
                out.append("%s: the same %d item(s), in another order" % (path or "record", len(a)))
            else:
                out.append("%s: %s" % (path or "record", ", ".join(
                    sorted("+" + short_value(a[k]) for k in set(a) - set(b)) + sorted("-" + short_value(b[k]) for k in set(b) - set(a)))))
            return
        if all(isinstance(x, dict) for x in list(before) + list(after)):
            key = _identity(before, after)
        else:
            key = None
        if key is None:
            bm, am = dict(enumerate(before)), dict(enumerate(after))
        else:
            bm, am = dict((x[key], x) for x in before), dict((x[key], x) for x in after)
        for k in sorted(set(bm) | set(am), key=_sort_key):
            p = "%s[%s]" % (path, short_value(k) if key is not None else k)
            if k not in bm:
                out.append(_added(p, am[k]))
            elif k not in am:
                out.append(_removed(p, bm[k]))
            else:
                _changes(p, bm[k], am[k], out)
        return
    old, new = short_value(before), short_value(after)
    if old == new:
        # Values that read the same (16 and "16", or long ones cut alike): as JSON, whole.
        old, new = _raw(before), _raw(after)
    out.append("%s %s -> %s" % (path or "record", old, new))


def record_changes(before, after, stage=None, cap=CHANGES_CAP):
    """How one stage's record changed, as short lines, in a fixed order (keys sorted; a list's elements by their name).

    Nested mappings are flattened into dotted paths (``checkpoints.tiny.digest``); a list of mappings is matched by
    the first field of ``IDENTITY_KEYS`` every element has (``synced[tiny].digest 3f0c9d2e1a7b… -> 9b1f0a2c3d4e…``),
    else by index (``nodes[0]``); a list of scalars is compared as a set (``pushed: +<new>, -<old>``); an element or
    key that came or went: ``synced[model-b] added``, ``helm removed (was /b/binaries/helm)``. Digests are shortened
    (``short_value``). With ``stage``, its values of the run (``_PER_RUN``: bytes moved, seconds waited) are no
    change. ``before`` None: ``first run (no earlier record)``; ``after`` None: ``record removed``. At most ``cap``
    lines, the last then ``and N more``. The same records give ``[]``."""
    if before is None and after is None:
        return []
    if before is None:
        return ["first run (no earlier record)"]
    if after is None:
        return ["record removed"]
    out = []
    _changes("", _stable(stage, before), _stable(stage, after), out)
    if cap and len(out) > cap:
        out = out[:cap] + ["and %d more" % (len(out) - cap)]
    return out


def site_changes(records, before, stages=None, cap=CHANGES_CAP, pending=None):
    """``<stage>: <change>; <change>`` for each stage whose record differs from the one the run started with (``stages``'
    order, then the other records by name; each stage once: ``image_mirror (push)`` is ``image_mirror``; a stage
    named by another record name - gpu_operator's ``gpu`` - is shown under the stage's name), ``<stage>: first run (no
    earlier record)`` for a stage with no earlier record; nothing for a reading (``_READINGS``) or the same record.

    ``pending``: stage to the values a real run would record, for a stage that records nothing in check mode (the
    bundle import): combined over its record, its line reads ``<stage> (check mode, a real run would record): ...``."""
    if not isinstance(records, dict):
        raise ReportError("the records (llmops_site) must be a mapping of stage name to record, got %s: %r"
                          % (type(records).__name__, records))
    if not isinstance(before, dict):
        raise ReportError("the earlier records (the state file as the run loaded it) must be a mapping of stage name to "
                          "record, got %s: %r" % (type(before).__name__, before))
    if stages is not None and (not isinstance(stages, (list, tuple)) or not all(isinstance(s, str) for s in stages)):
        raise ReportError("stages must be a list of stage names, got %r" % (stages,))
    if pending is not None and not isinstance(pending, dict):
        raise ReportError("pending must be a mapping of stage name to the values a real run would record, got %r" % (pending,))
    pending = pending or {}
    for what, recs in (("record", records), ("earlier record", before), ("pending record", pending)):
        for name in sorted(recs, key=str):
            if recs[name] is not None and not isinstance(recs[name], dict):
                raise ReportError("the %s of stage %s is not a mapping: %r" % (what, name, recs[name]))
    names, keys = [], []
    stage_of = dict((v, k) for k, v in _RECORD_OF.items())
    for stage in list(stages or []) + sorted(set(records) | set(before) | set(pending), key=str):
        base = stage.split(" ", 1)[0]
        key = _RECORD_OF.get(base, base)
        if key in keys or key in _READINGS:
            continue
        names.append(stage_of.get(key, key))
        keys.append(key)
    lines = []
    for name, key in zip(names, keys):
        if key not in records and key not in before and key not in pending:
            continue
        now = records.get(key)
        if key in pending:
            now = dict(now or {})
            now.update(pending[key] or {})
        changes = record_changes(before.get(key), now, key, cap)
        if changes:
            lines.append("%s%s: %s" % (name, " (check mode, a real run would record)" if key in pending else "", "; ".join(changes)))
    return lines
