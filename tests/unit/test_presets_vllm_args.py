"""Every engine flag the serving chart renders (each preset, with quantization and LoRA modules)
is a flag of the pinned vLLM release, as extracted from vLLM's own source into
serving/vllm-args/<version>.txt by tests/tools/vllm_args.py."""
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "serving" / "chart"
HELM = REPO / ".tools" / "bin" / "helm"
VERSION = (REPO / "serving" / "vllm-args" / "VERSION").read_text().strip()


def pinned_flags():
    text = (REPO / "serving" / "vllm-args" / ("%s.txt" % VERSION)).read_text()
    return set(ln for ln in text.splitlines() if ln and not ln.startswith("#"))


def render(models, extra=None):
    values = dict(engine=dict(image="reg:5000/docker.io/vllm/vllm-openai:v%s" % VERSION),
                  downloader=dict(image="reg:5000/localhost/llmops/model-pull:0.1.0"),
                  objectStore=dict(endpoint="https://s3.site.internal:9000", bucket="b"), models=models)
    values.update(extra or {})
    p = subprocess.run([str(HELM), "template", "t", str(CHART), "-f", "-"], input=yaml.safe_dump(values),
                       capture_output=True, text=True, check=False)
    return p


def engine_args(out):
    return dict((d["metadata"]["name"], d["spec"]["template"]["spec"]["containers"][0]["args"])
                for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment")


def model(name, preset, **kw):
    m = dict(name=name, preset=preset, gpus=2, checkpoint=dict(prefix="p/" + name, digest="c" * 64, bytes=10 ** 10))
    m.update(kw)
    return m


def test_pinned_version_matches_chart_app_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == VERSION
    assert len(pinned_flags()) > 100 and "--max-model-len" in pinned_flags()


def test_every_rendered_flag_is_a_pinned_vllm_flag():
    presets = yaml.safe_load((CHART / "values.yaml").read_text())["presets"]
    models = [model("m-" + p.replace("_", "-"), p, quantization="awq", loraModules={"a": "lora/a"}) for p in presets]
    p = render(models)
    assert p.returncode == 0, p.stderr
    args = engine_args(p.stdout)
    assert len(args) == len(presets)
    rendered = set(a for a in sum(args.values(), []) if a.startswith("--"))
    assert rendered - pinned_flags() == set()
    assert {"--enable-lora", "--lora-modules", "--quantization", "--tensor-parallel-size", "--max-num-seqs",
            "--max-num-batched-tokens", "--gpu-memory-utilization", "--enable-prefix-caching"} <= rendered


def test_overrides_and_rendering_rules():
    m = model("chat", "chat", args={"max-model-len": 2048, "enable-prefix-caching": None, "enforce-eager": True,
                                    "block-size": 16, "override-generation-config": '{"temperature": 0.2}'})
    args = engine_args(render([m]).stdout)["t-chat"]
    assert args[args.index("--max-model-len") + 1] == "2048"
    assert "--enable-prefix-caching" not in args and "--enforce-eager" in args
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.9"
    assert args[args.index("--override-generation-config") + 1] == '{"temperature": 0.2}'
    assert set(a for a in args if a.startswith("--")) <= pinned_flags()


def test_startup_budget_formula():
    # ceil((120 + ceil(1e10 / 209715200)) / 10) = ceil((120 + 48) / 10) = 17
    out = render([model("a", "chat")]).stdout
    dep = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment"][0]
    engine = dep["spec"]["template"]["spec"]["containers"][0]
    assert engine["startupProbe"]["failureThreshold"] == 17 and engine["startupProbe"]["periodSeconds"] == 10
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "2"
    shm = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm"][0]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "5120Mi"}


def test_bad_models_are_refused_with_the_key_named():
    cases = [
        (model("Bad_Name", "chat"), 'models[].name "Bad_Name": a DNS label of at most 40 characters'),
        (model("a", "huge"), 'models[a].preset "huge" is not a preset; known: chat, chat_small, completion'),
        (model("a", "chat", checkpoint=dict(prefix="p", digest="abc")), "models[a].checkpoint.digest must be the manifest's sha256"),
        (model("a", "chat", args={"tensor-parallel-size": 4}), "models[a].args.tensor-parallel-size is set by the chart"),
    ]
    for m, message in cases:
        p = render([m])
        assert p.returncode != 0 and message in p.stderr, (message, p.stderr)
