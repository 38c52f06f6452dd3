{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "fedge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: "<release>-<chart>", or just the release name when it already
contains the chart name. Kept at 50 characters so that suffixes such as "-metrics" stay within
the 63 allowed for a Service name.
*/}}
{{- define "fedge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "fedge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "fedge.labels" -}}
helm.sh/chart: {{ include "fedge.chart" . }}
{{ include "fedge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fedge
{{- end }}

{{/* Labels that identify the release; selectors add app.kubernetes.io/component. */}}
{{- define "fedge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fedge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector of the coordinator pods. */}}
{{- define "fedge.cloud.selectorLabels" -}}
{{ include "fedge.selectorLabels" . }}
app.kubernetes.io/component: cloud
{{- end }}

{{/* Selector of the edge pods. */}}
{{- define "fedge.edge.selectorLabels" -}}
{{ include "fedge.selectorLabels" . }}
app.kubernetes.io/component: edge
{{- end }}

{{/*
The Prometheus job name of the coordinator. The metrics Service carries it as the label
fedge.io/scrape-job, and the ServiceMonitor's jobLabel turns that into job="fedge-cloud", which
the alert rules and dashboards use.
*/}}
{{- define "fedge.scrapeJob" -}}
fedge-cloud
{{- end }}

{{/* "<registry>/<repository>:<tag>", the tag defaulting to the appVersion. Call with
(dict "image" .Values.image.cloud "root" .). */}}
{{- define "fedge.image" -}}
{{- $registry := .root.Values.image.registry | trimSuffix "/" }}
{{- $tag := .image.tag | default .root.Chart.AppVersion }}
{{- if $registry }}
{{- printf "%s/%s:%s" $registry .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{- define "fedge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fedge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Names of the Secrets: an existing one, or the one the chart creates. */}}
{{- define "fedge.webhookSecretName" -}}
{{- .Values.webhook.secret.existingSecret | default (printf "%s-webhook" (include "fedge.fullname" .)) }}
{{- end }}

{{- define "fedge.tokensSecretName" -}}
{{- .Values.adminTokens.existingSecret | default (printf "%s-admin-tokens" (include "fedge.fullname" .)) }}
{{- end }}

{{- define "fedge.tlsSecretName" -}}
{{- .Values.tls.existingSecret | default (printf "%s-tls" (include "fedge.fullname" .)) }}
{{- end }}

{{/* Where the Secrets are mounted in the coordinator container. */}}
{{- define "fedge.webhookSecretPath" -}}
/etc/fedge/webhook/webhook-secret
{{- end }}

{{/* The coordinator's flag file, the content of its ConfigMap. */}}
{{- define "fedge.cloud.flags" -}}
# fedge-cloud flags, one a line; passed with --flagfile.
--data_dir={{ .Values.persistence.mountPath }}
--fleet_address=0.0.0.0:{{ .Values.ports.fleet | int64 }}
--admin_address=0.0.0.0:{{ .Values.ports.admin | int64 }}
--rest_address={{ if .Values.restEnabled }}0.0.0.0:{{ .Values.ports.rest | int64 }}{{ end }}
--metrics_address=0.0.0.0:{{ .Values.ports.metrics | int64 }}
--heartbeat_interval_ms={{ .Values.config.heartbeatIntervalMs | int64 }}
--liveness_timeout_ms={{ .Values.config.livenessTimeoutMs | int64 }}
--max_update_norm={{ .Values.config.maxUpdateNorm }}
--max_connections={{ .Values.config.maxConnections | int64 }}
--max_connections_per_address={{ .Values.config.maxConnectionsPerAddress | int64 }}
--node_transfers={{ .Values.config.nodeTransfers | int64 }}
--shutdown_grace_s={{ max 1 (sub (.Values.terminationGracePeriodSeconds | int64) 5) }}
--verbosity={{ .Values.config.verbosity | int64 }}
{{- with .Values.webhook.urls }}
--webhook_urls={{ join "," . }}
{{- end }}
{{- if .Values.webhook.secret.enabled }}
--webhook_secret_file={{ include "fedge.webhookSecretPath" . }}
{{- end }}
{{- if .Values.adminTokens.enabled }}
--admin_tokens_file=/etc/fedge/tokens/{{ .Values.adminTokens.key }}
{{- end }}
{{- if .Values.tls.insecure }}
--insecure
{{- else if .Values.tls.enabled }}
--tls_cert=/etc/fedge/tls/tls.crt
--tls_key=/etc/fedge/tls/tls.key
{{- else }}
{{- $name := include "fedge.fullname" . }}
--tls_names={{ join "," (concat (list $name (printf "%s.%s" $name .Release.Namespace) (printf "%s.%s.svc" $name .Release.Namespace) (printf "%s.%s.svc.cluster.local" $name .Release.Namespace) "localhost" "127.0.0.1") .Values.tls.extraNames) }}
{{- end }}
{{- end }}
