{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "canaria.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: <release>-canaria, or <release> if it already contains the chart name.
*/}}
{{- define "canaria.fullname" -}}
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

{{/*
chart label value: name-version.
*/}}
{{- define "canaria.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "canaria.labels" -}}
helm.sh/chart: {{ include "canaria.chart" . }}
{{ include "canaria.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: canaria
{{- end }}

{{/*
Labels that select the operator's Pod (immutable once installed).
*/}}
{{- define "canaria.selectorLabels" -}}
app.kubernetes.io/name: {{ include "canaria.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Name of the ServiceAccount the operator runs as.
*/}}
{{- define "canaria.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "canaria.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the cluster-scoped RBAC objects. They are shared by the whole cluster, so the release namespace is
part of the name: two releases of the same name in different namespaces do not collide.
*/}}
{{- define "canaria.clusterRoleName" -}}
{{- printf "%s-%s" (include "canaria.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Operator image reference: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "canaria.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The generated RBAC rules (files/rbac-rules.yaml, written by scripts/generate.py from canaria.rbac).
*/}}
{{- define "canaria.rbacRules" -}}
{{- .Files.Get "files/rbac-rules.yaml" }}
{{- end }}

{{/*
Name of the metrics Service (Prometheus' job label when scraped through the ServiceMonitor).
*/}}
{{- define "canaria.metricsServiceName" -}}
{{- printf "%s-metrics" (include "canaria.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
