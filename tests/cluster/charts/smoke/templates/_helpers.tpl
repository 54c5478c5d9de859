{{- define "smoke.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "smoke.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "smoke.labels" -}}
{{ include "smoke.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
API version for a PodDisruptionBudget: policy/v1 where the cluster serves it (1.21+),
else policy/v1beta1 (Kubernetes 1.20; removed in 1.25). Against a cluster, helm fills
.Capabilities.APIVersions from discovery. `helm template` has no cluster and always
lists policy/v1 (group/version only, no kinds), so the KubeVersion check keeps
`helm template --kube-version 1.20.2` honest as well.
*/}}
{{- define "smoke.pdb.apiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "policy/v1") (semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}
