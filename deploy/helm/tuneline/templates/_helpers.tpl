{{/* Names: derived from the release, cut to 63 characters (Kubernetes' DNS label limit). */}}
{{- define "tuneline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tuneline.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<component>", still at most 63 characters: the prefix gives way, never the component. */}}
{{- define "tuneline.componentName" -}}
{{- $component := .component }}
{{- $prefix := include "tuneline.fullname" .ctx | trunc (int (sub 62 (len $component))) | trimSuffix "-" }}
{{- printf "%s-%s" $prefix $component }}
{{- end }}

{{- define "tuneline.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tuneline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tuneline
{{- end }}

{{- define "tuneline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tuneline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tuneline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tuneline.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tuneline.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
NATS names. These helpers are also called from the NATS subchart's values ($tplYaml), where the
context is the subchart's: they use only .Release and .Values.global.
*/}}
{{- define "tuneline.natsFullname" -}}
{{- if contains "nats" .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-nats" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "tuneline.natsUsersSecret" -}}
{{- $global := (.Values.global).tuneline | default dict }}
{{- $global.natsUsersSecret | default (printf "%s-nats-users" (.Release.Name | trunc 52 | trimSuffix "-")) }}
{{- end }}

{{- define "tuneline.natsTlsSecret" -}}
{{- $global := (.Values.global).tuneline | default dict }}
{{- $global.natsTlsSecret | default (printf "%s-nats-tls" (.Release.Name | trunc 54 | trimSuffix "-")) }}
{{- end }}

{{- define "tuneline.natsAuthConfigMap" -}}
{{- printf "%s-nats-auth" (.Release.Name | trunc 53 | trimSuffix "-") }}
{{- end }}

{{/* The NATS container's environment: one TUNELINE_NATS_PASSWORD_<USER> per user, from the Secret. */}}
{{- define "tuneline.natsPasswordEnv" -}}
{{- $secret := include "tuneline.natsUsersSecret" . }}
{{- range (include "tuneline.natsUsers" . | splitList " ") }}
TUNELINE_NATS_PASSWORD_{{ upper . }}:
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ . }}
{{- end }}
{{- end }}

{{- define "tuneline.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- printf "%s://%s:4222" (ternary "tls" "nats" .Values.natsTls.enabled) (include "tuneline.natsFullname" .) }}
{{- else }}
{{- required "externalNats.url is required when nats.enabled is false" .Values.externalNats.url }}
{{- end }}
{{- end }}
