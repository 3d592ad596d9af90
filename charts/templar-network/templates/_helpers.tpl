{{- define "templar-network.labels" -}}
app.kubernetes.io/name: templar-network
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "templar-network.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "templar-network.writeSecret" -}}
{{- if .Values.storage.writeSecret -}}
{{- .Values.storage.writeSecret -}}
{{- else if .Values.secrets.create -}}
{{- printf "%s-s3" .Release.Name -}}
{{- else -}}
{{- fail "storage.writeSecret is required (or secrets.create with secrets.s3 keys)" -}}
{{- end -}}
{{- end -}}

{{/* The wallet secret of one role: ( dict "ctx" $ "role" "miner" ). */}}
{{- define "templar-network.walletSecret" -}}
{{- $node := index .ctx.Values .role -}}
{{- if $node.walletSecret -}}
{{- $node.walletSecret -}}
{{- else if .ctx.Values.secrets.create -}}
{{- printf "%s-%s-wallet" .ctx.Release.Name .role -}}
{{- else -}}
{{- fail (printf "%s.walletSecret is required (or secrets.create with %s.hotkeys)" .role .role) -}}
{{- end -}}
{{- end -}}

{{/* The spec both kinds share, for one role: ( dict "ctx" $ "role" "miner" ). */}}
{{- define "templar-network.nodeSpec" -}}
{{- $v := .ctx.Values -}}
{{- $node := index $v .role -}}
image: {{ include "templar-network.image" .ctx | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
{{- with $v.imagePullSecrets }}
imagePullSecrets: {{ toJson . }}
{{- end }}
replicas: {{ $node.replicas }}
chain:
  kind: {{ $v.chain.kind }}
  {{- with $v.chain.endpoint }}
  endpoint: {{ . | quote }}
  {{- end }}
  {{- if not (kindIs "invalid" $v.chain.netuid) }}
  netuid: {{ $v.chain.netuid }}
  {{- end }}
storage:
  {{- with $v.storage.endpoint }}
  endpoint: {{ . | quote }}
  {{- end }}
  {{- with $v.storage.region }}
  region: {{ . | quote }}
  {{- end }}
  bucket: {{ required "storage.bucket is required" $v.storage.bucket | quote }}
  writeSecret: {{ include "templar-network.writeSecret" .ctx }}
  {{- with $v.storage.readSecret }}
  readSecret: {{ . }}
  {{- end }}
walletSecret: {{ include "templar-network.walletSecret" . }}
{{- if and $v.model (regexMatch "(?m)^\\s*\\[model\\]" $v.hyperparameters) }}
{{- fail "the model is set in two places: model and the hyperparameters' [model] section; keep one" }}
{{- end }}
{{- with $v.model }}
model: {{ . | quote }}
{{- end }}
hyperparameters:
  inline: {{ $v.hyperparameters | quote }}
resources:
  gpus: {{ $node.resources.gpus }}
  {{- with $node.resources.gpuType }}
  gpuType: {{ . | quote }}
  {{- end }}
  {{- with $node.resources.cpu }}
  cpu: {{ . | quote }}
  {{- end }}
  {{- with $node.resources.memory }}
  memory: {{ . | quote }}
  {{- end }}
  {{- with $node.resources.shmSize }}
  shmSize: {{ . | quote }}
  {{- end }}
{{- with $node.cache }}
cache:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $node.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $node.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $node.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $node.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- if not (kindIs "invalid" $node.maxUnavailable) }}
disruptionBudget:
  maxUnavailable: {{ $node.maxUnavailable }}
{{- end }}
{{- end -}}
