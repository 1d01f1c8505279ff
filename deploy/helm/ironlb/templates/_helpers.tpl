{{/*
Object names are fixed (ironlb-controller, ironlb-speaker, ironlb-webhook, ...), not derived from
the release name: one ironlb per cluster is all that can work (cluster-wide CRDs and webhook, the
speakers' host ports), and the names are the same as with `kubectl apply -k deploy/`.
*/}}

{{/* Labels of every object of a component: include "ironlb.labels" (list . "controller") */}}
{{- define "ironlb.labels" -}}
{{- $root := index . 0 -}}
{{ include "ironlb.selectorLabels" (index . 1) }}
app.kubernetes.io/part-of: ironlb
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version }}
{{- end }}

{{/* What Services, PodDisruptionBudgets and workloads select a component's pods by. */}}
{{- define "ironlb.selectorLabels" -}}
app.kubernetes.io/name: ironlb
app.kubernetes.io/component: {{ . }}
{{- end }}

{{- define "ironlb.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* Flags both components take, with the same meaning: serving a class is all-or-nothing. */}}
{{- define "ironlb.commonArgs" -}}
- --log-format={{ .Values.logFormat }}
- --log-level={{ .Values.logLevel }}
{{- with .Values.loadBalancerClass }}
- --lb-class={{ . }}
{{- end }}
{{- end }}
