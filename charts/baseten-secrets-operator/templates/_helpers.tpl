{{/*
The name of every object: the release name when it already holds the chart's name (a release
called baseten-secrets-operator renders exactly deploy/base), else release-chart.
*/}}
{{- define "bso.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
The label that selects this release's pods. It names the release's objects, so that two
releases in one namespace never select each other's pods.
*/}}
{{- define "bso.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bso.fullname" . }}
{{- end -}}

{{/* Every object's labels: the selector label and commonLabels. */}}
{{- define "bso.labels" -}}
{{ include "bso.selectorLabels" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "bso.serviceAccountName" -}}
{{- default (include "bso.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* "true" when the replicas elect a leader: asked for, or more than one replica. */}}
{{- define "bso.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) -}}true{{- end -}}
{{- end -}}

{{/* The image reference: repository, then the tag (appVersion by default), then the digest. */}}
{{- define "bso.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- if .Values.image.tag -}}
{{ .Values.image.repository }}:{{ $tag }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- end -}}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/*
What the operator needs and nothing more, in a ClusterRole or in one Role per watched
namespace: read its resources and write their status, watch Secret metadata and read the
Secrets its resources name, publish events.
*/}}
{{- define "bso.rules" -}}
- apiGroups: ["baseten.co"]
  resources: ["basetensecrets"]
  # patch: the cleanup finalizer (deletionPolicy: Delete), and applying the BasetenSecrets
  # of a BasetenSecretSet (create: the first apply; delete: a key that is gone).
  verbs: ["list", "watch", "patch", "create", "delete"]
- apiGroups: ["baseten.co"]
  resources: ["basetensecrets/status"]
  verbs: ["patch"]
- apiGroups: ["baseten.co"]
  resources: ["basetensecretsets"]
  # patch: the set's cleanup finalizer.
  verbs: ["list", "watch", "patch"]
- apiGroups: ["baseten.co"]
  resources: ["basetensecretsets/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
