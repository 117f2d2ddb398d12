{{- define "tracing.selectorLabels" -}}
app: jaeger
app.kubernetes.io/name: jaeger
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tracing.labels" -}}
{{ include "tracing.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: tracing
app.kubernetes.io/part-of: smm
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "tracing.image" -}}
{{ .Values.global.imageRegistry }}/{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- /* host:port of one of Jaeger's servers, an IPv6 host in brackets. */}}
{{- define "tracing.endpoint" -}}
{{- $host := .root.Values.listen.host -}}
{{- if contains ":" $host }}{{ $host = printf "[%s]" $host }}{{ end -}}
{{ $host }}:{{ get .root.Values.listen.ports .port }}
{{- end }}
