{{/*
Object names are fixed, not derived from the release name: the operator finds its leader lease,
and the CLI finds the operator, by them. One operator per cluster.
*/}}
{{- define "smm-operator.name" -}}smm-operator{{- end }}

{{/* Selects the operator's pods; `app.kubernetes.io/name` is how the smm CLI finds the operator. */}}
{{- define "smm-operator.selectorLabels" -}}
app.kubernetes.io/name: smm-operator
{{- end }}

{{- define "smm-operator.labels" -}}
{{ include "smm-operator.selectorLabels" . }}
app.kubernetes.io/part-of: smm
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/*
The pod template's labels: the same as the kustomize packaging's (deploy/operator), without who
manages the objects, so that switching from one packaging to the other does not roll the pods.
*/}}
{{- define "smm-operator.podLabels" -}}
{{ include "smm-operator.selectorLabels" . }}
app.kubernetes.io/part-of: smm
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Cluster-scoped objects also carry the component label that smm's native objects carry. */}}
{{- define "smm-operator.clusterLabels" -}}
{{ include "smm-operator.labels" . }}
smm.dev/component: operator
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given (a digest names one image for good). */}}
{{- define "smm-operator.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/* The namespace of the reconcile leases; fixed in smm (src/api/names.rs, SMM_NAMESPACE). It
must exist before a release into another namespace: the chart does not create it, since helm would
then delete it, with the CLI's leases, on uninstall. */}}
{{- define "smm-operator.leaseNamespace" -}}smm-system{{- end }}
