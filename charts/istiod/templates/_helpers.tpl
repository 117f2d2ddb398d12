{{- define "istiod.name" -}}
istiod{{ if .Values.global.revision }}-{{ .Values.global.revision }}{{ end }}
{{- end }}

{{- define "istiod.selectorLabels" -}}
app: istiod
istio.io/rev: {{ .Values.global.revision | default "default" | quote }}
{{- end }}

{{- define "istiod.labels" -}}
{{ include "istiod.selectorLabels" . }}
app.kubernetes.io/name: istiod
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: smm
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "istiod.image" -}}
{{ .Values.global.imageRegistry }}/{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
