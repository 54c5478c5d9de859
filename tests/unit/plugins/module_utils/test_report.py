"""The site verification report (module_utils/_report.py, the verify_report and site_stages filters): the JSON
document's shape, red and green lines with their fixes, an HTML page that escapes every value (a hostile object key or
model name stays text), carries no script, link or URL of its own and passes the egress audit's public-url rule, and
the stage table shared with the end-of-run summary."""
import html.parser
import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.site_stages import FilterModule as StagesFilters, site_stages
from ansible_collections.llmops.onprem.plugins.filter.verify_report import FilterModule as ReportFilters, verify_report
from ansible_collections.llmops.onprem.plugins.module_utils import _egress, _report

GOOD = {"stage": "pki", "check": "certificate infra-1/redis", "status": "ok", "detail": "expires in 364.9 days"}
BAD = {"stage": "checkpoints", "check": "qwen object checksums", "status": "fail",
       "detail": "1 of 5 object(s) in s3://model-checkpoints/qwen/ab hold other bytes than the manifest says: config.json",
       "fix": "ansible-playbook -i site playbooks/site.yml --tags checkpoints -e checkpoints_read_back=true"}
SKIP = {"stage": "vllm_serving", "check": "a completion from each served model", "status": "skipped",
        "detail": "no kubeconfig (llmops_kubeconfig is not set)"}
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&"\''


class Tags(html.parser.HTMLParser):
    """Every start tag and its attributes, and the text of each element."""

    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page):
    p = Tags()
    p.feed(page)
    return p


def test_the_report_document_groups_lines_by_stage_in_site_order_and_counts_them():
    report = verify_report([SKIP, BAD, GOOD], "site-a", "2026-12-04T18:00:00Z")
    assert report["schema"] == "llmops.onprem/verify-report/v1"
    assert (report["site"], report["generated"], report["ok"]) == ("site-a", "2026-12-04T18:00:00Z", False)
    assert report["counts"] == {"ok": 1, "warn": 0, "fail": 1, "skipped": 1}
    assert [(s["stage"], s["ok"], len(s["lines"])) for s in report["stages"]] == [
        ("pki", True, 1), ("checkpoints", False, 1), ("vllm_serving", True, 1)]
    line = report["stages"][1]["lines"][0]
    assert sorted(line) == ["check", "detail", "fix", "stage", "status"]
    assert line["fix"] == BAD["fix"]
    assert report["site_stages"] == []
    # A JSON document: it round-trips.
    assert json.loads(json.dumps(report)) == report
    assert verify_report([GOOD, SKIP])["ok"] is True


def test_a_green_line_carries_no_fix_and_failures_name_stage_check_detail_and_fix():
    report = verify_report([dict(GOOD, fix="nothing to do")])
    assert report["stages"][0]["lines"][0]["fix"] == ""
    assert verify_report([GOOD, BAD], format="failures") == [
        "checkpoints / qwen object checksums: %s Fix: %s" % (BAD["detail"], BAD["fix"])]


@pytest.mark.parametrize("line, message", [
    (dict(GOOD, status="green"), "has status 'green'; one of ok, warn, fail, skipped"),
    ({"check": "x", "status": "ok"}, "check line 0 has no stage"),
    (dict(BAD, fix=""), "check line 0 (checkpoints / qwen object checksums) fails without a fix"),
    ("a string", "check line 0 is not a mapping"),
])
def test_a_line_the_report_cannot_hold_is_refused_by_name(line, message):
    with pytest.raises(AnsibleFilterError, match="verify_report: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        verify_report([line])


def test_html_red_and_green_rows_with_the_fix_on_the_red_one():
    page = verify_report([GOOD, BAD, SKIP], "site-a", "2026-12-04T18:00:00Z", format="html")
    p = parse(page)
    rows = [a.get("class") for t, a in p.tags if t == "tr" and a.get("class")]
    assert rows == ["fail", "ok", "fail", "skipped"]  # the red line first (To fix), then a table per stage
    assert [t for t, _a in p.tags].count("table") == 4
    assert "<h2>To fix</h2>" in page and "<td>checkpoints / qwen object checksums</td>" in page
    assert "tr.fail td.status{background:#cf222e}" in page and "tr.ok td.status{background:#1a7f37}" in page
    text = "".join(p.text)
    assert BAD["fix"] in text and "1 check(s) failed" in text
    green = verify_report([GOOD], format="html")
    assert green.count("All checks passed") == 1 and "To fix" not in green


def test_html_escapes_a_hostile_object_key_model_name_and_site_name():
    lines = [dict(BAD, check=HOSTILE + " object checksums", detail="corrupt: " + HOSTILE, fix="delete " + HOSTILE),
             dict(GOOD, stage=HOSTILE)]
    page = verify_report(lines, HOSTILE, HOSTILE, [{"stage": HOSTILE, "state": HOSTILE, "where": HOSTILE}], format="html")
    p = parse(page)
    assert sorted(set(t for t, _a in p.tags)) == sorted(
        ["html", "head", "meta", "title", "style", "body", "h1", "p", "div", "h2", "table", "thead", "tr", "th", "tbody", "td", "code"])
    assert not [a for _t, attrs in p.tags for a in attrs if a.startswith("on") or a in ("src", "href")]
    assert "<script" not in page and "<img" not in page
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&amp;&quot;&#x27;") >= 6
    # The text the browser shows is the hostile string itself, as text.
    assert HOSTILE in "".join(p.text)


def test_the_page_is_self_contained_and_passes_the_egress_audit_public_url_rule():
    page = verify_report([GOOD, BAD, SKIP, dict(GOOD, detail="chat at http://10.0.0.7:8000 answered")], "site-a",
                         format="html", stages=[{"stage": "minio", "state": "done", "where": "https://minio.site.internal:9000"}])
    p = parse(page)
    assert not [t for t, _a in p.tags if t in ("script", "link", "img", "iframe", "object", "a")]
    assert "@import" not in page and "url(" not in page
    found = [u for _f, u in _egress.urls_in({"page": page}) if _egress.public_host(_egress.host_of(u))]
    assert found == []
    # The rule does catch a public URL in the same page: the check can fail.
    bad = verify_report([dict(GOOD, detail="see https://example.com/help")], format="html")
    assert [u for _f, u in _egress.urls_in({"page": bad}) if _egress.public_host(_egress.host_of(u))] == ["https://example.com/help"]


def test_stage_rows_done_changed_skipped_not_selected_and_where():
    records = {"pki": {"ca_file": "/s/.private/pki/ca.crt", "hosts_ca_file": "/etc/llmops/pki/ca.crt"},
               "redis": {"url": "rediss://infra-1:6379", "inventory_host": "infra-1"},
               "gpu": {"nodes": [{"node": "gpu-1", "count": 8, "product": "NVIDIA-H100"}]}}
    before = {"pki": dict(records["pki"])}
    rows = site_stages(["pki", "redis", "image_mirror (push)", "gpu_operator", "model_engine", "verify"], records, before,
                       {"image_mirror (push)": "no imported bundle", "model_engine": ""},
                       ["pki", "redis", "image_mirror (push)", "gpu_operator", "model_engine"],
                       {"verify": "report /s/.private/verify/report.html"})
    assert rows == [
        {"stage": "pki", "state": "done", "where": "CA /s/.private/pki/ca.crt (hosts: /etc/llmops/pki/ca.crt)"},
        {"stage": "redis", "state": "changed", "where": "rediss://infra-1:6379 on infra-1"},
        {"stage": "image_mirror (push)", "state": "skipped: no imported bundle", "where": "-"},
        {"stage": "gpu_operator", "state": "changed", "where": "gpu-1: 8 x NVIDIA-H100"},
        {"stage": "model_engine", "state": "done", "where": "-"},
        {"stage": "verify", "state": "not run (not selected by the tags)", "where": "report /s/.private/verify/report.html"}]
    later = site_stages(["pki", "postgres"], records, this_run=False)
    assert [r["state"] for r in later] == ["recorded", "no record"]
    assert site_stages(["verify"], states={"verify": "next"})[0]["state"] == "next"


def test_the_table_aligns_its_columns():
    lines = site_stages(["pki", "image_mirror (push)"], {}, {}, {"image_mirror (push)": "no imported bundle"}, table=True)
    assert lines == ["stage                state                        where",
                     "pki                  done                         -",
                     "image_mirror (push)  skipped: no imported bundle  -"]
    assert site_stages([{"stage": "a", "state": "b", "where": "c"}], table=True) == ["stage  state  where", "a      b      c"]


def test_bad_input_to_the_stage_table_is_refused():
    with pytest.raises(AnsibleFilterError, match="site_stages: expected a list of stage names"):
        site_stages("pki")
    with pytest.raises(AnsibleFilterError, match="site_stages: skipped must be a mapping"):
        site_stages(["pki"], skipped=["pki"])
    with pytest.raises(AnsibleFilterError, match="verify_report: format must be data, html or failures"):
        verify_report([GOOD], format="pdf")


def test_the_filters_are_registered():
    assert ReportFilters().filters() == {"verify_report": verify_report}
    assert StagesFilters().filters() == {"site_stages": site_stages}
    assert _report.STATUSES == ("ok", "warn", "fail", "skipped")
