{{/* Name of one model's objects: <release>-<model name>, at most 63 characters. */}}
{{- define "llmops-serving.name" -}}
{{- printf "%s-%s" .root.Release.Name .model.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llmops-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
llmops.onprem/model: {{ .model.name }}
{{- end -}}

{{- define "llmops-serving.labels" -}}
{{ include "llmops-serving.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: llmops-onprem
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* policy/v1 where served (1.21+), else policy/v1beta1 (1.20). See tests/cluster/charts/smoke. */}}
{{- define "llmops-serving.pdb.apiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "policy/v1") (semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{/* Validate one model entry; renders nothing. */}}
{{- define "llmops-serving.validate" -}}
{{- $m := .model -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$" (toString $m.name)) -}}
{{- fail (printf "models[].name %q: a DNS label of at most 40 characters (lower case, digits, '-') is needed" (toString $m.name)) -}}
{{- end -}}
{{- if not (hasKey .root.Values.presets (toString $m.preset)) -}}
{{- fail (printf "models[%s].preset %q is not a preset; known: %s" $m.name (toString $m.preset) (keys .root.Values.presets | sortAlpha | join ", ")) -}}
{{- end -}}
{{- $c := $m.checkpoint | default dict -}}
{{- if not (regexMatch "^[0-9a-f]{64}$" (toString $c.digest)) -}}
{{- fail (printf "models[%s].checkpoint.digest must be the manifest's sha256 (64 hex digits), got %q" $m.name (toString $c.digest)) -}}
{{- end -}}
{{- if not $c.prefix -}}
{{- fail (printf "models[%s].checkpoint.prefix is empty: name the checkpoint's prefix in the bucket" $m.name) -}}
{{- end -}}
{{- if not (or $c.bucket .root.Values.objectStore.bucket) -}}
{{- fail (printf "models[%s].checkpoint.bucket and objectStore.bucket are both empty" $m.name) -}}
{{- end -}}
{{- range $k := list "model" "served-model-name" "host" "port" "tensor-parallel-size" "api-key" "enable-lora" "lora-modules" -}}
{{- if hasKey ($m.args | default dict) $k -}}
{{- fail (printf "models[%s].args.%s is set by the chart (from name, servedName, gpus, apiKey, loraModules): remove it" $m.name $k) -}}
{{- end -}}
{{- end -}}
{{- if not (has (toString ($m.load | default "pull")) (list "pull" "stream")) -}}
{{- fail (printf "models[%s].load %q: use pull (model-pull into the node cache) or stream (vLLM's runai_streamer from the store)" $m.name (toString $m.load)) -}}
{{- end -}}
{{- if eq (toString $m.load) "stream" -}}
{{- range $k := list "load-format" "model-loader-extra-config" -}}
{{- if hasKey ($m.args | default dict) $k -}}
{{- fail (printf "models[%s].args.%s is set by the chart for load: stream (from streamer): remove it" $m.name $k) -}}
{{- end -}}
{{- end -}}
{{- if $m.loraModules -}}
{{- fail (printf "models[%s]: loraModules need the checkpoint on local disk; use load: pull" $m.name) -}}
{{- end -}}
{{- end -}}
{{- if lt (int (default 0 $m.gpus)) 0 -}}
{{- fail (printf "models[%s].gpus must be 0 or more" $m.name) -}}
{{- end -}}
{{- end -}}

{{/* Directory of the checkpoint in the containers: <cache>/<model name>/<digest>. */}}
{{- define "llmops-serving.modelPath" -}}
{{- printf "%s/%s/%s" .root.Values.cache.mountPath .model.name .model.checkpoint.digest -}}
{{- end -}}

{{/* "true" when the model streams its weights from the store (load: stream), else "". */}}
{{- define "llmops-serving.streams" -}}
{{- if eq (toString .model.load) "stream" -}}true{{- end -}}
{{- end -}}

{{/* The checkpoint in the store: s3://<bucket>/<prefix> (load: stream). */}}
{{- define "llmops-serving.storeUrl" -}}
{{- printf "s3://%s/%s" (.model.checkpoint.bucket | default .root.Values.objectStore.bucket) (trimAll "/" .model.checkpoint.prefix) -}}
{{- end -}}

{{/* Environment naming the object store and its read-only credential (a YAML list). */}}
{{- define "llmops-serving.storeCredentialEnv" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ .Values.objectStore.secretName | quote }}, key: {{ .Values.objectStore.accessKeyKey | quote }}}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ .Values.objectStore.secretName | quote }}, key: {{ .Values.objectStore.secretKeyKey | quote }}}}
{{- end -}}

{{/* The engine's arguments (a YAML list): fixed ones, then preset + per-model overrides by flag name. */}}
{{- define "llmops-serving.engineArgs" -}}
{{- $m := .model -}}
{{- $args := mergeOverwrite (deepCopy (index .root.Values.presets $m.preset)) (deepCopy ($m.args | default dict)) -}}
{{- if $m.quantization -}}{{- $_ := set $args "quantization" $m.quantization -}}{{- end -}}
- --model
{{- if include "llmops-serving.streams" . }}
- {{ include "llmops-serving.storeUrl" . | quote }}
- --load-format
- "runai_streamer"
- --model-loader-extra-config
{{- $cfg := dict "concurrency" (int .root.Values.streamer.concurrency) }}
{{- if .root.Values.streamer.memoryLimit }}{{- $_ := set $cfg "memory_limit" (int64 .root.Values.streamer.memoryLimit) }}{{- end }}
- {{ toJson $cfg | quote }}
{{- else }}
- {{ include "llmops-serving.modelPath" . | quote }}
{{- end }}
- --served-model-name
- {{ $m.servedName | default $m.name | quote }}
- --host
- "0.0.0.0"
- --port
- {{ .root.Values.engine.port | quote }}
- --tensor-parallel-size
- {{ max 1 (int (default 0 $m.gpus)) | quote }}
{{- if $m.loraModules }}
- --enable-lora
- --lora-modules
{{- range $name := keys $m.loraModules | sortAlpha }}
- {{ printf "%s=%s/%s" $name (include "llmops-serving.modelPath" $) (index $m.loraModules $name) | quote }}
{{- end }}
{{- end }}
{{- range $k := keys $args | sortAlpha }}
{{- $v := index $args $k }}
{{- if kindIs "bool" $v }}
{{- if $v }}
- --{{ $k }}
{{- end }}
{{- else if kindIs "invalid" $v }}
{{- else if kindIs "slice" $v }}
- --{{ $k }}
{{- range $v }}
- {{ toString . | quote }}
{{- end }}
{{- else if and (kindIs "float64" $v) (eq (floor $v) $v) }}
- --{{ $k }}
- {{ int64 $v | toString | quote }}
{{- else }}
- --{{ $k }}
- {{ toString $v | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* startupProbe failureThreshold: ceil((baseSeconds + ceil(bytes / loadBytesPerSecond)) / periodSeconds). */}}
{{- define "llmops-serving.startupFailureThreshold" -}}
{{- if .model.startupFailureThreshold -}}
{{- int .model.startupFailureThreshold -}}
{{- else -}}
{{- $s := .root.Values.startup -}}
{{- $bytes := int64 (default 0 (.model.checkpoint.bytes)) -}}
{{- $rate := int64 $s.loadBytesPerSecond -}}
{{- $period := int64 $s.periodSeconds -}}
{{- $load := div (add $bytes (sub $rate 1)) $rate -}}
{{- $budget := add (int64 $s.baseSeconds) $load -}}
{{- div (add $budget (sub $period 1)) $period -}}
{{- end -}}
{{- end -}}

{{- define "llmops-serving.shmSize" -}}
{{- printf "%dMi" (add (int .root.Values.engine.shm.baseMi) (mul (int .root.Values.engine.shm.perGpuMi) (max 1 (int (default 0 .model.gpus))))) -}}
{{- end -}}
