{{- /*
smm's recording and alerting rules for the mesh, the groups of rules.yml. Alert annotations
are Prometheus templates, which helm must leave alone: they are written as {{`{{ ... }}`}}.
*/}}
{{- define "prometheus.rules" -}}
# Per-workload request rate, error ratio and latency as the receiving side's proxy reports them
# (reporter="destination"), for the alerts below and for dashboards.
- name: istio-workloads
  rules:
    - record: destination_workload:istio_requests:rate5m
      expr: |
        sum by (destination_workload_namespace, destination_workload, response_code) (
          rate(istio_requests_total{reporter="destination"}[5m])
        )
    - record: destination_workload:istio_request_errors:ratio_rate5m
      expr: |
        sum by (destination_workload_namespace, destination_workload) (
          destination_workload:istio_requests:rate5m{response_code=~"5.."}
        )
        /
        sum by (destination_workload_namespace, destination_workload) (
          destination_workload:istio_requests:rate5m
        )
    - record: destination_workload:istio_request_duration_milliseconds:p99_rate5m
      expr: |
        histogram_quantile(0.99,
          sum by (destination_workload_namespace, destination_workload, le) (
            rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[5m])
          )
        )
# The control plane: istiod scraped at all, and its errors configuring proxies, injecting
# sidecars and signing workload certificates.
- name: istio-control-plane
  rules:
    - alert: IstiodDown
      expr: absent(up{job="istiod"} == 1)
      for: 5m
      labels:
        severity: critical
      annotations:
        summary: No istiod is up in {{ .Values.global.istioNamespace }}
        description: >-
          Prometheus has reached no istiod in namespace {{ .Values.global.istioNamespace }} for
          5 minutes. Proxies get no configuration changes, new pods get no sidecar (the
          injection webhook fails closed) and workload certificates are not renewed.
    - alert: IstioXdsPushErrors
      expr: sum by (pod, type) (rate(pilot_xds_pushes{type=~".+_senderr"}[5m])) > 0
      for: 10m
      labels:
        severity: warning
      annotations:
        summary: istiod {{`{{ $labels.pod }}`}} fails to send configuration to proxies
        description: >-
          istiod {{`{{ $labels.pod }}`}} has failed to send {{`{{ $labels.type }}`}} updates
          for 10 minutes ({{`{{ $value | humanize }}`}} per second): some proxies run stale
          configuration.
    - alert: IstioXdsInternalErrors
      expr: sum by (pod) (rate(pilot_total_xds_internal_errors[5m])) > 0
      for: 10m
      labels:
        severity: warning
      annotations:
        summary: istiod {{`{{ $labels.pod }}`}} fails to build proxy configuration
        description: >-
          istiod {{`{{ $labels.pod }}`}} has had internal errors building xDS configuration
          for 10 minutes; its logs say which proxies and resources.
    - alert: IstioProxiesRejectConfiguration
      expr: sum by (pod, type) (rate(pilot_total_xds_rejects[5m])) > 0
      for: 10m
      labels:
        severity: warning
      annotations:
        summary: Proxies reject the configuration of istiod {{`{{ $labels.pod }}`}}
        description: >-
          Proxies have rejected (NACKed) {{`{{ $labels.type }}`}} configuration from istiod
          {{`{{ $labels.pod }}`}} for 10 minutes and keep running their previous one: usually
          an invalid resource (`istioctl analyze`) or a proxy older than istiod.
    - alert: IstioSidecarInjectionFailures
      expr: sum by (pod) (rate(sidecar_injection_failure_total[5m])) > 0
      for: 5m
      labels:
        severity: warning
      annotations:
        summary: istiod {{`{{ $labels.pod }}`}} fails to inject sidecars
        description: >-
          Sidecar injection by istiod {{`{{ $labels.pod }}`}} has failed for 5 minutes: pods
          of injected namespaces are refused or start without a proxy.
    - alert: IstioCertificateSigningErrors
      expr: sum by (pod) (rate(citadel_server_csr_sign_err_count[5m])) > 0
      for: 5m
      labels:
        severity: critical
      annotations:
        summary: istiod {{`{{ $labels.pod }}`}} fails to sign workload certificates
        description: >-
          istiod {{`{{ $labels.pod }}`}} has failed to sign certificate requests for 5
          minutes: proxies whose certificates expire lose mutual TLS.
# The data plane: requests that fail at the receiving workload.
- name: istio-data-plane
  rules:
    - alert: IstioHighRequestErrorRatio
      # At least one request a second, so that a handful of errors on an idle workload does
      # not page.
      expr: |
        destination_workload:istio_request_errors:ratio_rate5m > 0.05
        and on (destination_workload_namespace, destination_workload)
        sum by (destination_workload_namespace, destination_workload) (
          destination_workload:istio_requests:rate5m
        ) > 1
      for: 10m
      labels:
        severity: warning
      annotations:
        summary: >-
          {{`{{ $labels.destination_workload_namespace }}/{{ $labels.destination_workload }}`}}
          answers more than 5% of requests with 5xx
        description: >-
          {{`{{ $value | humanizePercentage }}`}} of the requests to workload
          {{`{{ $labels.destination_workload }}`}} in namespace
          {{`{{ $labels.destination_workload_namespace }}`}} have failed with a 5xx status for
          10 minutes.
{{- if .Values.ambient.enabled }}
    - alert: ZtunnelDown
      expr: up{job="ztunnel"} == 0
      for: 5m
      labels:
        severity: critical
      annotations:
        summary: ztunnel on {{`{{ $labels.node }}`}} is not scraped
        description: >-
          Prometheus has not reached ztunnel {{`{{ $labels.pod }}`}} on node
          {{`{{ $labels.node }}`}} for 5 minutes; the ambient workloads of that node may have no
          connectivity.
{{- end }}
{{- end }}
