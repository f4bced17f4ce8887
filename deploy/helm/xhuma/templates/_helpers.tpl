{{/*
The chart's name, or nameOverride.
*/}}
{{- define "xhuma.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the release's objects (DNS label: at most 63 characters). A release whose name already
contains the chart name is used as it is.
*/}}
{{- define "xhuma.fullname" -}}
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
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "xhuma.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "xhuma.labels" -}}
helm.sh/chart: {{ include "xhuma.chart" . }}
{{ include "xhuma.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: xhuma
{{- end }}

{{/*
Labels that select the release's pods (the gateway and the migration Job).
*/}}
{{- define "xhuma.selectorLabels" -}}
app.kubernetes.io/name: {{ include "xhuma.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels that select the gateway pods only (Deployment, Service, PodDisruptionBudget, topology spread).
*/}}
{{- define "xhuma.gatewaySelectorLabels" -}}
{{ include "xhuma.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{/*
The service account of the pods.
*/}}
{{- define "xhuma.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "xhuma.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: a digest wins over the tag; the tag defaults to the chart's appVersion.
*/}}
{{- define "xhuma.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Where the writable scratch volumes are mounted; the working directory is also XHUMA_WORKING_DIR.
*/}}
{{- define "xhuma.workingDir" -}}
/var/lib/xhuma
{{- end }}

{{/*
The restricted pod security profile of every pod (pod level).
*/}}
{{- define "xhuma.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The restricted pod security profile of every container.
*/}}
{{- define "xhuma.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Environment variables from existing Secrets (secretKeyRef only: no secret value is ever rendered).
*/}}
{{- define "xhuma.secretEnv" -}}
{{- if .Values.sharedKeys.existingSecret }}
- name: XHUMA_CACHE_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.sharedKeys.existingSecret }}
      key: {{ .Values.sharedKeys.cacheKeysKey }}
- name: XHUMA_AUDIT_HMAC_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.sharedKeys.existingSecret }}
      key: {{ .Values.sharedKeys.auditHmacKeyKey }}
{{- if .Values.sharedKeys.cacheHashKeyKey }}
- name: XHUMA_CACHE_HASH_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.sharedKeys.existingSecret }}
      key: {{ .Values.sharedKeys.cacheHashKeyKey }}
{{- end }}
{{- end }}
{{- include "xhuma.databaseEnv" . }}
{{- if .Values.redis.existingSecret }}
- name: XHUMA_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- end }}
{{- range .Values.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- end }}

{{/*
The audit database URL from its Secret (the gateway and the migration Job).
*/}}
{{- define "xhuma.databaseEnv" -}}
{{- if .Values.database.existingSecret }}
- name: XHUMA_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.existingSecretKey }}
{{- end }}
{{- end }}
