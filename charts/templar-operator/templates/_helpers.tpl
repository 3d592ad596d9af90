{{/* Names and labels shared by the templates. */}}

{{- define "templar-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the chart name when the release carries it already. */}}
{{- define "templar-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "templar-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "templar-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "templar-operator.labels" -}}
{{ include "templar-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "templar-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "templar-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "templar-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The rules the operator needs on its resources, identical for the ClusterRole and for each
namespace's Role: exactly the calls it makes (operator/tests/chart.rs checks both ways).
*/}}
{{- define "templar-operator.rules" -}}
# Watch both kinds (the controllers' list + watch); read one that does not parse, to name
# the field at fault.
- apiGroups: [templar.tplr.ai]
  resources: [templarminers, templarvalidators]
  verbs: [get, list, watch]
# Write window, loss, score and conditions (server-side apply on the status subresource).
- apiGroups: [templar.tplr.ai]
  resources: [templarminers/status, templarvalidators/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion on the objects it makes.
- apiGroups: [templar.tplr.ai]
  resources: [templarminers/finalizers, templarvalidators/finalizers]
  verbs: [update]
# The node pods' StatefulSet: applied (create + patch), read back, watched for rollouts.
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, patch]
# Headless and metrics Services (server-side apply).
- apiGroups: [""]
  resources: [services]
  verbs: [create, patch]
# The hyperparameters ConfigMap: the user's is read, the rendered one applied.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch]
# Named secrets only, to check that the referenced keys exist; values never leave it.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# The pods it owns, for their state and their /status; one is deleted (and recreated by its
# StatefulSet) when its own hotkey changes in the wallet Secret.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, delete]
# The disruption budget a resource asks for; read, and deleted when the spec drops it.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch, delete]
# Events on the resources (a repeated event is patched).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
