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

{{/* Validate one model entry; renders nothing. Keys, types, the name, the digest and the enums
     (load, device) are values.schema.json's: helm refuses them before any template runs. What is
     left here needs other values (presets, objectStore, the vLLM flag lists) or other models. */}}
{{- define "llmops-serving.validate" -}}
{{- $m := .model -}}
{{- $same := 0 -}}
{{- range $o := .root.Values.models -}}{{- if eq (toString $o.name) (toString $m.name) -}}{{- $same = add1 $same -}}{{- end -}}{{- end -}}
{{- if gt $same 1 -}}
{{- fail (printf "models[%s]: %d models have this name; each needs its own (it names the Deployment, Service and cache directory)" $m.name $same) -}}
{{- end -}}
{{- if not (hasKey .root.Values.presets (toString $m.preset)) -}}
{{- fail (printf "models[%s].preset %q is not a preset; known: %s" $m.name (toString $m.preset) (keys .root.Values.presets | sortAlpha | join ", ")) -}}
{{- end -}}
{{- $c := $m.checkpoint | default dict -}}
{{- if not (or $c.bucket .root.Values.objectStore.bucket) -}}
{{- fail (printf "models[%s].checkpoint.bucket and objectStore.bucket are both empty" $m.name) -}}
{{- end -}}
{{- range $k := list "model" "served-model-name" "host" "port" "tensor-parallel-size" "api-key" "enable-lora" "lora-modules" "shutdown-timeout" -}}
{{- if hasKey ($m.args | default dict) $k -}}
{{- fail (printf "models[%s].args.%s is set by the chart (from name, servedName, gpus, apiKey, loraModules, drain.seconds): remove it" $m.name $k) -}}
{{- end -}}
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
{{- include "llmops-serving.validateDevice" . -}}
{{- end -}}

{{/* The model's device profile: "cpu" or "gpu" (device auto: gpu when gpus > 0; values.schema.json allows nothing else). */}}
{{- define "llmops-serving.device" -}}
{{- $d := toString (.model.device | default .root.Values.device | default "auto") -}}
{{- if eq $d "auto" -}}
{{- if gt (int (default 0 .model.gpus)) 0 -}}gpu{{- else -}}cpu{{- end -}}
{{- else -}}
{{- $d -}}
{{- end -}}
{{- end -}}

{{/* The flag list of the vLLM a profile runs, as JSON {flag (no --): [flag, kind, choices=...]}. */}}
{{- define "llmops-serving.vllmFlags" -}}
{{- $ver := toString (index .root.Values.engine.vllmVersion .device) -}}
{{- $file := printf "files/vllm-args-%s.txt" $ver -}}
{{- $text := .root.Files.Get $file -}}
{{- if not $text -}}
{{- $known := list -}}
{{- range $path, $_ := .root.Files.Glob "files/vllm-args-*.txt" -}}
{{- $known = append $known (trimSuffix ".txt" (trimPrefix "files/vllm-args-" $path)) -}}
{{- end -}}
{{- fail (printf "engine.vllmVersion.%s %q: the chart has no flag list %s for it; known: %s (tests/tools/vllm_args.py --installed makes one)" .device $ver $file (join ", " $known)) -}}
{{- end -}}
{{- $flags := dict -}}
{{- range $ln := splitList "\n" $text -}}
{{- if and $ln (not (hasPrefix "#" $ln)) -}}
{{- $f := splitList "\t" $ln -}}
{{- $_ := set $flags (trimPrefix "--" (first $f)) $f -}}
{{- end -}}
{{- end -}}
{{- toJson $flags -}}
{{- end -}}

{{/* A model's flags -> values after its device profile: preset, then the model's args, then quantization;
     on cpu the preset's GPU-only flags are left out and kv-cache-memory-bytes defaults from devices.cpu (JSON). */}}
{{- define "llmops-serving.effectiveArgs" -}}
{{- $m := .model -}}
{{- $preset := deepCopy (index .root.Values.presets $m.preset) -}}
{{- if eq (include "llmops-serving.device" .) "cpu" -}}
{{- range $k := .root.Values.devices.cpu.gpuOnlyFlags -}}{{- $_ := unset $preset $k -}}{{- end -}}
{{- if .root.Values.devices.cpu.kvCacheMemoryBytes -}}
{{- $_ := set $preset "kv-cache-memory-bytes" .root.Values.devices.cpu.kvCacheMemoryBytes -}}
{{- end -}}
{{- end -}}
{{- $args := mergeOverwrite $preset (deepCopy ($m.args | default dict)) -}}
{{- if $m.quantization -}}{{- $_ := set $args "quantization" $m.quantization -}}{{- end -}}
{{- toJson $args -}}
{{- end -}}

{{/* Device profile and flag checks of one model; renders nothing. Each refusal names the model. */}}
{{- define "llmops-serving.validateDevice" -}}
{{- $m := .model -}}
{{- $dev := include "llmops-serving.device" . -}}
{{- $gpus := int (default 0 $m.gpus) -}}
{{- if and (eq $dev "gpu") (lt $gpus 1) -}}
{{- fail (printf "models[%s]: device gpu needs gpus 1 or more (the tensor parallel size); for a CPU engine set device: cpu" $m.name) -}}
{{- end -}}
{{- if and (eq $dev "cpu") (gt $gpus 0) -}}
{{- fail (printf "models[%s]: device cpu takes no GPUs but gpus is %d; set gpus: 0, or device: gpu" $m.name $gpus) -}}
{{- end -}}
{{- $ver := toString (index .root.Values.engine.vllmVersion $dev) -}}
{{- $flags := include "llmops-serving.vllmFlags" (dict "root" .root "device" $dev) | fromJson -}}
{{- $own := $m.args | default dict -}}
{{- if eq $dev "cpu" -}}
{{- range $k := .root.Values.devices.cpu.gpuOnlyFlags -}}
{{- if hasKey $own $k -}}
{{- fail (printf "models[%s].args.%s is a GPU-only flag but the model's device profile is cpu: remove it, or set device: gpu" $m.name $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $fixed := list "model" "served-model-name" "host" "port" "shutdown-timeout" -}}
{{- if eq $dev "gpu" -}}{{- $fixed = append $fixed "tensor-parallel-size" -}}{{- end -}}
{{- if $m.loraModules -}}{{- $fixed = concat $fixed (list "enable-lora" "lora-modules") -}}{{- end -}}
{{- if eq (toString $m.load) "stream" -}}{{- $fixed = concat $fixed (list "load-format" "model-loader-extra-config") -}}{{- end -}}
{{- range $k := $fixed -}}
{{- if not (hasKey $flags $k) -}}
{{- fail (printf "models[%s]: the chart passes --%s, which vLLM %s (engine.vllmVersion.%s) does not have: pin a vLLM that has it" $m.name $k $ver $dev) -}}
{{- end -}}
{{- end -}}
{{- $args := include "llmops-serving.effectiveArgs" . | fromJson -}}
{{- range $k := keys $args | sortAlpha -}}
{{- $v := index $args $k -}}
{{- $where := printf "models[%s].args.%s" $m.name $k -}}
{{- if not (hasKey $own $k) -}}{{- $where = printf "presets.%s.%s (models[%s])" $m.preset $k $m.name -}}{{- end -}}
{{- if and (eq $k "quantization") $m.quantization -}}{{- $where = printf "models[%s].quantization" $m.name -}}{{- end -}}
{{- if and (eq $k "kv-cache-memory-bytes") (not (hasKey $own $k)) (eq $dev "cpu") -}}{{- $where = printf "devices.cpu.kvCacheMemoryBytes (models[%s])" $m.name -}}{{- end -}}
{{- if not (hasKey $flags $k) -}}
{{- fail (printf "%s: --%s is not a flag of vLLM %s (the %s profile's engine, engine.vllmVersion.%s): check the spelling against the chart's files/vllm-args-%s.txt" $where $k $ver $dev $dev $ver) -}}
{{- end -}}
{{- $f := index $flags $k -}}
{{- $kind := index $f 1 -}}
{{- if and (eq $kind "bare") (not (kindIs "bool" $v)) (not (kindIs "invalid" $v)) -}}
{{- fail (printf "%s: --%s takes no value in vLLM %s: set it to true (pass it) or false (leave it out)" $where $k $ver) -}}
{{- end -}}
{{- if and (ne $kind "bare") (kindIs "bool" $v) $v -}}
{{- fail (printf "%s: --%s needs a value in vLLM %s, not true" $where $k $ver) -}}
{{- end -}}
{{- if and (gt (len $f) 2) (not (kindIs "bool" $v)) (not (kindIs "invalid" $v)) (not (kindIs "slice" $v)) -}}
{{- $choices := splitList "," (trimPrefix "choices=" (index $f 2)) -}}
{{- $sv := toString $v -}}
{{- if and (kindIs "float64" $v) (eq (floor $v) $v) -}}{{- $sv = toString (int64 $v) -}}{{- end -}}
{{- if not (has $sv $choices) -}}
{{- fail (printf "%s: vLLM %s refuses --%s %s; it accepts: %s" $where $ver $k $sv (join ", " $choices)) -}}
{{- end -}}
{{- end -}}
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

{{/* The engine's arguments (a YAML list): fixed ones, then the effective args (preset + device + model) by flag name. */}}
{{- define "llmops-serving.engineArgs" -}}
{{- $m := .model -}}
{{- $args := include "llmops-serving.effectiveArgs" . | fromJson -}}
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
{{- if eq (include "llmops-serving.device" .) "gpu" }}
- --tensor-parallel-size
- {{ int $m.gpus | quote }}
{{- end }}
- --shutdown-timeout
- {{ int .root.Values.drain.seconds | quote }}
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

{{/* The warm-up startup probe's command (values.yaml warmup): python3 -c SCRIPT PORT REQUESTS MAX_TOKENS PROMPT MODEL...
     where MODEL is the served name and then each LoRA adapter's name. Exit 0 only when /health answered and every
     completion came back with a choice; any error is the probe's output (the pod's event). */}}
{{- define "llmops-serving.warmupCommand" -}}
{{- $m := .model -}}
{{- $w := .root.Values.warmup -}}
- python3
- -c
- {{ .root.Files.Get "files/warmup.py" | quote }}
- {{ .root.Values.engine.port | toString | quote }}
- {{ int $w.requests | toString | quote }}
- {{ int $w.maxTokens | toString | quote }}
- {{ $w.prompt | quote }}
- {{ $m.servedName | default $m.name | quote }}
{{- range $name := keys ($m.loraModules | default dict) | sortAlpha }}
- {{ $name | quote }}
{{- end }}
{{- end -}}
