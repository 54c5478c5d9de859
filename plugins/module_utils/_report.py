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

SCHEMA = "llmops.onprem/verify-report/v1"
STATUSES = ("ok", "warn", "fail", "skipped")
# The order of site.yml's stages (docs/architecture.md); a stage not listed sorts after them, by name.
STAGE_ORDER = ("preflight", "bundle_import", "packages_repo", "pki", "redis", "registry", "image_mirror", "nvidia_driver",
               "postgres", "minio", "checkpoints", "cluster_secrets", "gpu_operator", "model_engine", "vllm_serving",
               "summary", "verify")


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


# A stage whose record is a reading of its run (not a hand-off, never in the state file): never "changed".
_READINGS = ("preflight",)
# A stage whose record is kept under another name.
_RECORD_OF = {"gpu_operator": "gpu"}


def stage_rows(stages, records=None, before=None, skipped=None, selected=None, where=None, states=None, this_run=True):
    """One row per stage: ``stage``, ``state`` and ``where``.

    ``stages`` are row names: a stage, or a stage and its part (``image_mirror (push)``); its first word names the
    stage and its record. ``records`` are the stages' records now (llmops_site), ``before`` those the run started from
    (the state file as the first play loaded it), ``skipped`` row to the reason it did not run, ``selected`` the rows
    this run's tags select (None: all), ``where`` row to a location that overrides the record's, ``states`` row to a
    state that overrides the computed one.

    state with ``this_run``: ``skipped: <reason>``; ``not run (not selected by the tags)``; ``changed`` when the
    stage's record differs from the one the run started with (a first run, or a new value); ``done`` otherwise (the
    record is the same, or the stage ran and records nothing). Without ``this_run`` (a report read any time):
    ``recorded`` (the stage has a record), else ``skipped: <reason>`` or ``no record``."""
    records, before, skipped, where, states = records or {}, before or {}, skipped or {}, where or {}, states or {}
    rows = []
    for stage in stages:
        base = stage.split(" ", 1)[0]
        key = _RECORD_OF.get(base, base)
        rec = records.get(key)
        if states.get(stage):
            state = states[stage]
        elif not this_run and rec is not None:
            state = "recorded"
        elif skipped.get(stage):
            state = "skipped: %s" % skipped[stage]
        elif not this_run:
            state = "no record"
        elif selected is not None and stage not in selected:
            state = "not run (not selected by the tags)" + ("; recorded by an earlier run" if rec is not None else "")
        elif rec is not None and key not in _READINGS and before.get(key) != rec:
            state = "changed"
        else:
            state = "done"
        rows.append({"stage": stage, "state": state, "where": _text(where.get(stage)) or _where(key, rec) or "-"})
    return rows


def text_table(rows, columns=("stage", "state", "where")):
    """Rows (dicts) as aligned text lines: a header, then one line per row (the last column is not padded)."""
    cells = [list(columns)] + [[_text(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns) - 1)]
    return ["  ".join([r[i].ljust(widths[i]) for i in range(len(columns) - 1)] + [r[-1]]).rstrip() for r in cells]
