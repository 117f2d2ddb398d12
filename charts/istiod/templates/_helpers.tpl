{{- define "istiod.name" -}}
istiod{{ if .Values.global.revision }}-{{ .Values.global.revision }}{{ end }}
{{- end }}

{{- /* Names of the per-revision ConfigMaps istiod reads. */}}
{{- define "istiod.revisionSuffix" -}}
{{ if .Values.global.revision }}-{{ .Values.global.revision }}{{ end }}
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
app.kubernetes.io/component: control-plane
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

{{- define "istiod.proxyImage" -}}
{{ .Values.global.imageRegistry }}/{{ .Values.sidecarInjector.proxy.repository }}:{{ .Values.sidecarInjector.proxy.tag | default .Chart.AppVersion }}
{{- end }}

{{- /* Whether more than one replica is meant to run, which is when a PodDisruptionBudget helps. */}}
{{- define "istiod.replicated" -}}
{{- if .Values.autoscaling.enabled }}{{ if gt (int .Values.autoscaling.minReplicas) 1 }}true{{ end }}
{{- else if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{- /* Cluster-scoped, so it carries the namespace: several meshes may share a cluster. */}}
{{- define "istiod.injectorWebhookName" -}}
istio-sidecar-injector{{ include "istiod.revisionSuffix" . }}-{{ .Release.Namespace }}
{{- end }}

{{- /* The parts every injection webhook shares; takes a dict of service, namespace,
failurePolicy and timeoutSeconds. Pods labelled sidecar.istio.io/inject=false are never sent. */}}
{{- define "istiod.injectionWebhook" -}}
admissionReviewVersions: ["v1"]
sideEffects: None
reinvocationPolicy: Never
failurePolicy: {{ .failurePolicy }}
timeoutSeconds: {{ .timeoutSeconds }}
clientConfig:
  service:
    name: {{ .service }}
    namespace: {{ .namespace }}
    path: /inject
    port: 443
rules:
  - operations: ["CREATE"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
objectSelector:
  matchExpressions:
    - {key: sidecar.istio.io/inject, operator: NotIn, values: ["false"]}
{{- end }}
