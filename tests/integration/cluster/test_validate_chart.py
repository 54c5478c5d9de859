"""validate-chart.sh accepts the smoke chart and rejects charts that hard-code an API
version one side (1.20 or current Kubernetes) does not serve."""
import shutil

PDB = """apiVersion: {api}
kind: PodDisruptionBudget
metadata:
  name: {{{{ include "smoke.fullname" . }}}}
spec:
  minAvailable: 1
  selector:
    matchLabels:
      {{{{- include "smoke.selectorLabels" . | nindent 6 }}}}
"""


def validate(kube, chart, *values):
    return kube.run([kube.CLUSTER / "validate-chart.sh", chart, *values], check=False)


def chart_copy(kube, tmp_path, pdb_api):
    chart = tmp_path / "smoke"
    shutil.copytree(kube.CLUSTER / "charts" / "smoke", chart)
    (chart / "templates" / "pdb.yaml").write_text(PDB.format(api=pdb_api))
    return chart


def test_smoke_chart_validates(kube, tmp_path):
    p = validate(kube, kube.CLUSTER / "charts" / "smoke")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "validate-chart: smoke OK" in p.stdout
    assert "kubernetes-validate --strict" in p.stdout
    # values files are passed through to helm
    values = tmp_path / "values.yaml"
    values.write_text("podDisruptionBudget:\n  enabled: false\nreplicas: 2\n")
    p = validate(kube, kube.CLUSTER / "charts" / "smoke", values)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 resources pass" in p.stdout


def test_hard_coded_v1beta1_pdb_fails_current_schemas(kube, tmp_path):
    p = validate(kube, chart_copy(kube, tmp_path, "policy/v1beta1"))
    assert p.returncode != 0, p.stdout + p.stderr
    assert "has no policy/v1beta1 PodDisruptionBudget" in p.stderr, p.stderr


def test_hard_coded_v1_pdb_fails_for_1_20(kube, tmp_path):
    p = validate(kube, chart_copy(kube, tmp_path, "policy/v1"))
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Kubernetes 1.20.2 does not serve policy/v1 PodDisruptionBudget" in p.stderr, p.stderr


def test_schema_violation_fails(kube, tmp_path):
    chart = chart_copy(kube, tmp_path, "policy/v1")
    (chart / "templates" / "pdb.yaml").unlink()
    (chart / "templates" / "bad.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndata:\n  a: b\nbogusField: 1\n")
    p = validate(kube, chart)
    assert p.returncode != 0, p.stdout + p.stderr
    assert "'bogusField' was unexpected" in p.stderr, p.stderr
