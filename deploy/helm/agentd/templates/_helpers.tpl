{{/* Names, labels and the Secrets' names, shared by the templates. */}}

{{- define "agentd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agentd.fullname" -}}
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

{{- define "agentd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agentd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "agentd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "agentd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agentd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the admin token: the user's, or the one the chart makes. */}}
{{- define "agentd.authSecretName" -}}
{{- default (printf "%s-auth" (include "agentd.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* The ConfigMap holding agentd.toml, or nothing when there is no configuration. */}}
{{- define "agentd.configMapName" -}}
{{- if .Values.existingConfigMap }}
{{- .Values.existingConfigMap }}
{{- else if .Values.config }}
{{- printf "%s-config" (include "agentd.fullname" .) }}
{{- end }}
{{- end }}

{{- define "agentd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* What the schema cannot say: settings that would put a secret into a ConfigMap,
     and two sources of agentd.toml at once. */}}
{{- define "agentd.checks" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.database.existingSecret) }}
{{- fail (printf "replicas: %d nodes need PostgreSQL (database.existingSecret: the Secret holding its URL); SQLite is one node's file" (int .Values.replicas)) }}
{{- end }}
{{- range $key := list "token" "tokens" "database_url" }}
{{- if hasKey $.Values.config $key }}
{{- fail (printf "config.%s: a secret does not belong in agentd.toml's ConfigMap; give the admin token with auth.existingSecret and the database URL with database.existingSecret (Secrets)" $key) }}
{{- end }}
{{- end }}
{{- if dig "termo" "token" "" .Values.config }}
{{- fail "config.termo.token: a secret does not belong in agentd.toml's ConfigMap; give it as AGENTD_TERMO='{\"token\": ...}' from a Secret (env)" }}
{{- end }}
{{- if and .Values.config .Values.existingConfigMap }}
{{- fail "config and existingConfigMap are both set: agentd.toml comes from one of them" }}
{{- end }}
{{- end }}
