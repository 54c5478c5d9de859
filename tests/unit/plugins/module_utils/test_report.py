"""The site verification report (module_utils/_report.py, the verify_report and site_stages filters): the JSON
document's shape, red and green lines with their fixes, an HTML page that escapes every value (a hostile object key or
model name stays text), carries no script, link or URL of its own and passes the egress audit's public-url rule, and
the stage table shared with the end-of-run summary, and what changed in each stage's record (the summary's change
report of an upgrade)."""
import html.parser
import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.site_changes import FilterModule as ChangesFilters, site_changes
from ansible_collections.llmops.onprem.plugins.filter.site_records_stable import site_records_stable
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


def test_the_prune_row_says_what_earlier_bundles_left_and_is_kept_or_clean_read_later():
    digest = "sha256:" + "a" * 64
    records = {"image_mirror": {"images": ["reg:5000/lab/app:2"], "superseded": ["reg:5000/lab/app:1@" + digest]},
               "checkpoints": {"synced": [], "superseded": [{"name": "tiny", "prefix": "tiny/" + "b" * 64}]}}
    row = site_stages(["prune"], records, records)[0]
    assert row == {"stage": "prune", "state": "done", "where": "kept from earlier bundles: 1 image(s) (reg:5000/lab/app:1), "
                   "1 checkpoint prefix(es) (tiny/" + "b" * 64 + ")"}
    assert site_stages(["prune"], records, this_run=False)[0]["state"] == "kept"
    clean = {"image_mirror": {"images": ["reg:5000/lab/app:2"], "superseded": []}, "checkpoints": {"synced": []}}
    assert site_stages(["prune"], clean, this_run=False)[0] == {"stage": "prune", "state": "clean",
                                                                "where": "nothing left from earlier bundles"}
    # the rollback window: the summary passes the state, the where still names what is kept
    kept = site_stages(["prune"], records, states={"prune": "kept: llmops_keep_previous is true"})[0]
    assert kept["state"] == "kept: llmops_keep_previous is true" and kept["where"].startswith("kept from earlier bundles: 1 image(s)")
    assert _report.kept_from_earlier(None) == ""


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


# ---- what changed per stage (record_changes, the site_changes filter): the change report of an upgrade ----------

D1, D2 = "3f0c9d2e1a7b" + "4" * 52, "9b1f0a2c3d4e" + "5" * 52


def synced(name, digest, uploaded=0):
    return {"name": name, "bucket": "model-checkpoints", "prefix": "%s/%s" % (name, digest), "digest": digest, "files": 3,
            "bytes": 1024, "bytes_uploaded": uploaded, "uploaded": 3 if uploaded else 0, "verified": True, "read_back": bool(uploaded)}


def test_checkpoints_a_new_shard_names_the_model_and_shortens_the_digests():
    before = {"synced": [synced("tiny", D1, uploaded=1024)]}
    after = {"synced": [synced("tiny", D2)]}
    assert _report.record_changes(before, after, "checkpoints") == [
        "synced[tiny].digest 3f0c9d2e1a7b\u2026 -> 9b1f0a2c3d4e\u2026",
        "synced[tiny].prefix tiny/3f0c9d2e1a7b\u2026 -> tiny/9b1f0a2c3d4e\u2026"]
    # a model that came and one that went; the bytes the last sync uploaded are a reading of that run, no change
    assert _report.record_changes({"synced": [synced("model-a", D1)]}, {"synced": [synced("model-b", D1, uploaded=9)]},
                                  "checkpoints") == ["synced[model-a] removed", "synced[model-b] added"]
    assert _report.record_changes(before, {"synced": [synced("tiny", D1)]}, "checkpoints") == []


def test_image_mirror_pushed_and_superseded_are_sets_of_references():
    old, new = "reg:5000/lab/app:1@sha256:" + D1, "reg:5000/lab/app:2@sha256:" + D2
    base = "reg:5000/lab/base:1@sha256:" + "0" * 64
    before = {"registry": "reg:5000", "images": ["reg:5000/lab/app:1", "reg:5000/lab/base:1"], "pushed": [old, base],
              "superseded": [], "bytes_moved": 9663676416}
    after = {"registry": "reg:5000", "images": ["reg:5000/lab/base:1", "reg:5000/lab/app:2"], "pushed": [base, new],
             "superseded": [old], "bytes_moved": 0}
    assert _report.record_changes(before, after, "image_mirror") == [
        "images: +reg:5000/lab/app:2, -reg:5000/lab/app:1",
        "pushed: +reg:5000/lab/app:2@sha256:9b1f0a2c3d4e\u2026, -reg:5000/lab/app:1@sha256:3f0c9d2e1a7b\u2026",
        "superseded: +reg:5000/lab/app:1@sha256:3f0c9d2e1a7b\u2026"]
    # the same set in another order is said so (the table says changed: the record is not the same)
    assert _report.record_changes({"images": ["a", "b"]}, {"images": ["b", "a"]}) == ["images: the same 2 item(s), in another order"]


def test_bundle_import_flat_values_and_the_checkpoints_mapping_as_dotted_paths():
    before = {"dir": "/s/.bundle", "src": "/media/usb", "manifest_sha256": D1, "created": "2026-11-02T09:14:03Z",
              "files_total": 16, "bytes_total": 23251, "checkpoints": {"tiny": {"digest": D1, "file": "tiny.json"}},
              "helm": "", "helm_version": ""}
    after = dict(before, manifest_sha256=D2, created="2026-12-01T10:02:44Z", bytes_total=25251,
                 checkpoints={"tiny": {"digest": D2, "file": "tiny.json"}, "qwen": {"digest": D1, "file": "qwen.json"}},
                 helm="/s/.bundle/binaries/helm", helm_version="v3.15.4+gfa9efb0")
    assert _report.record_changes(before, after, "bundle_import") == [
        "bytes_total 23251 -> 25251",
        "checkpoints.qwen added",
        "checkpoints.tiny.digest 3f0c9d2e1a7b\u2026 -> 9b1f0a2c3d4e\u2026",
        "created 2026-11-02T09:14:03Z -> 2026-12-01T10:02:44Z",
        'helm "" -> /s/.bundle/binaries/helm',
        'helm_version "" -> v3.15.4+gfa9efb0',
        "manifest_sha256 3f0c9d2e1a7b\u2026 -> 9b1f0a2c3d4e\u2026"]
    assert _report.record_changes(after, dict(after, extra=True, helm_version=None)) == [
        "extra added: true", 'helm_version v3.15.4+gfa9efb0 -> null']
    assert _report.record_changes(after, dict((k, v) for k, v in after.items() if k != "helm")) == [
        "helm removed (was /s/.bundle/binaries/helm)"]


def test_nvidia_driver_gpu_nodes_and_serving_endpoints_are_named():
    assert _report.record_changes(
        {"hosts": {"gpu-1": {"state": "install_planned", "driver_version": "", "actions": []}}},
        {"hosts": {"gpu-1": {"state": "reboot_required", "driver_version": "570.133.20", "actions": ["reboot gpu-1"]}}}) == [
        "hosts.gpu-1.actions: +reboot gpu-1", 'hosts.gpu-1.driver_version "" -> 570.133.20',
        "hosts.gpu-1.state install_planned -> reboot_required"]
    node = {"node": "gpu-1", "product": "NVIDIA-H100-80GB-HBM3", "count": 8, "labels": {"nvidia.com/gpu.count": "8"}}
    assert _report.record_changes({"mode": "host", "nodes": [node]},
                                  {"mode": "host", "nodes": [dict(node, count=4, labels={"nvidia.com/gpu.count": "4"})]}) == [
        "nodes[gpu-1].count 8 -> 4", "nodes[gpu-1].labels.nvidia.com/gpu.count 8 -> 4"]
    ep = {"name": "llama", "url": "https://llama.site/v1", "model": "llama", "ready": True, "version": "0.8.5",
          "seconds": 41.2, "steps": [{"step": "health", "ok": True, "seconds": 38.1, "detail": "/health 200"}]}
    before = {"release": "llmops-serving", "chart_revision": 3, "endpoints": [ep]}
    after = {"release": "llmops-serving", "chart_revision": 4,
             "endpoints": [dict(ep, version="0.9.0", seconds=12.0, steps=[]), dict(ep, name="qwen", model="qwen")]}
    assert _report.record_changes(before, after, "vllm_serving") == [
        "chart_revision 3 -> 4", "endpoints[llama].version 0.8.5 -> 0.9.0", "endpoints[qwen] added"]
    # the seconds a readiness wait took are no change
    assert _report.record_changes(before, dict(before, endpoints=[dict(ep, seconds=2.5, steps=[])]), "vllm_serving") == []


def test_packages_repo_names_the_package_that_moved_and_the_hosts_it_reaches():
    before = {"repositories": {"debian-12": {"redis-server": "5:7.0.15-1~deb12u5", "liblzf1": "3.6-3"}},
              "hosts": {"svc-1": "debian-12"}}
    after = {"repositories": {"debian-12": {"redis-server": "5:7.0.15-1~deb12u6", "liblzf1": "3.6-3"},
                              "ubuntu-24.04": {"liblzf1": "3.6-4"}},
             "hosts": {"svc-1": "debian-12", "svc-2": "ubuntu-24.04"}}
    assert _report.record_changes(before, after, "packages_repo") == [
        "hosts.svc-2 added: ubuntu-24.04", "repositories.debian-12.redis-server 5:7.0.15-1~deb12u5 -> 5:7.0.15-1~deb12u6",
        "repositories.ubuntu-24.04 added"]
    rows = _report.stage_rows(["packages_repo"], {"packages_repo": after}, this_run=False)
    assert rows == [{"stage": "packages_repo", "state": "recorded",
                     "where": "2 host(s); debian-12: 2 package(s), ubuntu-24.04: 1 package(s)"}]


def test_elements_without_a_distinct_name_are_matched_by_index_and_types_may_change():
    assert _report.record_changes({"l": [{"x": 1}]}, {"l": [{"x": 2}, {"x": 3}]}) == ["l[0].x 1 -> 2", "l[1] added"]
    twins = [{"name": "a", "v": 1}, {"name": "a", "v": 2}]
    assert _report.record_changes({"l": twins}, {"l": [twins[0], dict(twins[1], v=3)]}) == ["l[1].v 2 -> 3"]
    assert _report.record_changes({"l": [{"ref": "r1", "d": D1}, {"ref": "r2", "d": D1}]},
                                  {"l": [{"ref": "r2", "d": D2}]}) == ["l[r1] removed", "l[r2].d 3f0c9d2e1a7b\u2026 -> 9b1f0a2c3d4e\u2026"]
    assert _report.record_changes({"v": "a"}, {"v": ["a", "b"]}) == ['v a -> ["a","b"]']
    # values that would read the same are shown whole, as JSON
    assert _report.record_changes({"files_total": 16}, {"files_total": "16"}) == ['files_total 16 -> "16"']
    long_a, long_b = "/srv/" + "a" * 80 + "/x", "/srv/" + "a" * 40 + "b" + "a" * 39 + "/x"
    assert _report.record_changes({"p": long_a}, {"p": long_b}) == ['p "%s" -> "%s"' % (long_a, long_b)]
    assert _report.record_changes({"l": [long_a]}, {"l": [long_b]}) == [
        "l: +%s, -%s" % (_report.short_value(long_b), _report.short_value(long_a))]


def test_values_are_shortened_digests_to_12_hex_and_long_text_in_the_middle():
    assert _report.short_value(D1) == "3f0c9d2e1a7b\u2026"
    assert _report.short_value("sha256:" + D1) == "sha256:3f0c9d2e1a7b\u2026"
    assert _report.short_value("a" * 65) == "a" * 24 + "\u2026" + "a" * 35  # not a digest: 65 hex
    path = "/srv/sites/lab-east/inventories/site/.bundle/images/blobs/" + "x" * 30 + "/index.json"
    assert len(_report.short_value(path)) == 60 and _report.short_value(path).endswith("/index.json")
    assert _report.short_value(path).startswith("/srv/sites/lab-east/inve")
    assert [_report.short_value(v) for v in (None, True, False, 0, 1.5, "")] == ["null", "true", "false", "0", "1.5", '""']


def test_the_changes_of_a_stage_are_capped():
    before, after = dict(("k%02d" % i, i) for i in range(20)), dict(("k%02d" % i, i + 1) for i in range(20))
    lines = _report.record_changes(before, after)
    assert lines == ["k%02d %d -> %d" % (i, i, i + 1) for i in range(8)] + ["and 12 more"]
    assert len(_report.record_changes(before, after, cap=0)) == 20
    assert _report.record_changes(before, after) == lines  # the same order every time


def test_first_run_unchanged_and_removed_records():
    assert _report.record_changes(None, {"a": 1}) == ["first run (no earlier record)"]
    assert _report.record_changes({"a": 1}, {"a": 1}) == []
    assert _report.record_changes({"a": 1}, None) == ["record removed"]
    assert _report.record_changes(None, None) == []


PKI = {"ca_file": "/s/.private/pki/ca.crt", "hosts_ca_file": "/etc/llmops/pki/ca.crt"}


def test_site_changes_one_line_per_changed_stage_in_the_table_order():
    records = {"preflight": {"ok": True}, "pki": PKI, "redis": {"url": "rediss://infra-2:6379"},
               "image_mirror": {"images": ["reg/app:2"], "bytes_moved": 5}, "gpu": {"mode": "operator"}, "custom": {"v": 2}}
    before = {"pki": PKI, "redis": {"url": "rediss://infra-1:6379"}, "image_mirror": {"images": ["reg/app:1"], "bytes_moved": 9},
              "gpu": {"mode": "host"}, "custom": {"v": 1}}
    stages = ["preflight", "bundle_import", "pki", "redis", "image_mirror (push)", "image_mirror (nodes)", "gpu_operator", "verify"]
    assert site_changes(records, before, stages) == [
        "redis: url rediss://infra-1:6379 -> rediss://infra-2:6379",
        "image_mirror: images: +reg/app:2, -reg/app:1",
        "gpu_operator: mode host -> operator",
        "custom: v 1 -> 2"]
    # without the stages: by record name (gpu_operator's record is gpu); a reading (preflight) is never a change
    assert site_changes(records, before) == [
        "custom: v 1 -> 2", "gpu_operator: mode host -> operator", "image_mirror: images: +reg/app:2, -reg/app:1",
        "redis: url rediss://infra-1:6379 -> rediss://infra-2:6379"]
    assert site_changes({"pki": PKI, "postgres": {"host": "db"}}, {}, ["pki", "postgres"]) == [
        "pki: first run (no earlier record)", "postgres: first run (no earlier record)"]
    assert site_changes({"pki": PKI, "preflight": {"ok": False}}, {"pki": PKI}, stages) == []
    assert site_changes({}, {}) == []


def test_site_changes_in_check_mode_says_what_a_real_import_would_record():
    rec = {"dir": "/s/.bundle", "src": "/media/usb", "manifest_sha256": D1, "bytes_total": 100}
    assert site_changes({"bundle_import": rec}, {"bundle_import": rec}, ["bundle_import"],
                        pending={"bundle_import": {"manifest_sha256": D2, "bytes_total": 120}}) == [
        "bundle_import (check mode, a real run would record): bytes_total 100 -> 120; "
        "manifest_sha256 3f0c9d2e1a7b\u2026 -> 9b1f0a2c3d4e\u2026"]
    assert site_changes({}, {}, ["bundle_import"], pending={"bundle_import": rec}) == [
        "bundle_import (check mode, a real run would record): first run (no earlier record)"]
    assert site_changes({"bundle_import": rec}, {"bundle_import": rec}, pending={"bundle_import": dict(rec)}) == []


def test_the_stage_table_and_the_change_lines_agree_on_values_of_the_run():
    before = {"checkpoints": {"synced": [synced("tiny", D1, uploaded=1024)]}}
    records = {"checkpoints": {"synced": [synced("tiny", D1)]}}
    assert site_stages(["checkpoints"], records, before)[0]["state"] == "done"
    assert site_changes(records, before, ["checkpoints"]) == []
    records = {"checkpoints": {"synced": [synced("tiny", D2)]}}
    assert site_stages(["checkpoints"], records, before)[0]["state"] == "changed"
    assert site_changes(records, before, ["checkpoints"])[0].startswith("checkpoints: synced[tiny].digest ")


@pytest.mark.parametrize("args, kwargs, message", [
    ((["pki"], {}), {}, "site_changes: the records (llmops_site) must be a mapping of stage name to record, got list: ['pki']"),
    (({}, "pki"), {}, "site_changes: the earlier records (the state file as the run loaded it) must be a mapping of stage "
                      "name to record, got str: 'pki'"),
    (({"pki": "x"}, {}), {}, "site_changes: the record of stage pki is not a mapping: 'x'"),
    (({}, {"redis": [1]}), {}, "site_changes: the earlier record of stage redis is not a mapping: [1]"),
    (({}, {}, "pki"), {}, "site_changes: stages must be a list of stage names, got 'pki'"),
    (({}, {}, [1]), {}, "site_changes: stages must be a list of stage names, got [1]"),
    (({}, {}), {"cap": -1}, "site_changes: cap must be a whole number, 0 or more, got -1"),
    (({}, {}), {"pending": ["bundle_import"]},
     "site_changes: pending must be a mapping of stage name to the values a real run would record, got ['bundle_import']"),
])
def test_bad_input_to_the_change_report_is_refused_by_name(args, kwargs, message):
    with pytest.raises(AnsibleFilterError) as e:
        site_changes(*args, **kwargs)
    assert str(e.value) == message


def test_the_change_filter_is_registered():
    assert ChangesFilters().filters() == {"site_changes": site_changes}


def test_the_state_file_keeps_no_reading_of_the_run():
    records = {
        "checkpoints": {"synced": [{"name": "tiny", "digest": "d", "bytes": 9, "bytes_uploaded": 9, "uploaded": 1,
                                    "bytes_copied": 0, "copied": 0, "read_back": False}], "superseded": []},
        "image_mirror": {"pushed": ["r/a:1@sha256:x"], "bytes_moved": 5},
        "vllm_serving": {"endpoints": [{"model": "m", "ready": True, "steps": [{"step": "health", "seconds": 1.5}]}]},
        "redis": {"url": "rediss://h:6379/0", "seconds": 3},
    }
    assert site_records_stable(records) == {
        "checkpoints": {"synced": [{"name": "tiny", "digest": "d", "bytes": 9}], "superseded": []},
        "image_mirror": {"pushed": ["r/a:1@sha256:x"]},
        "vllm_serving": {"endpoints": [{"model": "m", "ready": True}]},
        "redis": {"url": "rediss://h:6379/0", "seconds": 3},  # only the stages' own readings go
    }
    with pytest.raises(AnsibleFilterError, match="site_records_stable: the records must be a mapping"):
        site_records_stable(["not", "a", "mapping"])
