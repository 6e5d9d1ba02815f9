{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "ringtrain.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; the prefix of every object. Short enough that
"<fullname>-coordinator-N" stays a valid DNS label. */}}
{{- define "ringtrain.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ringtrain.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "ringtrain.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels; call with (dict "ctx" $ "component" "worker"). */}}
{{- define "ringtrain.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ringtrain.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ringtrain.coordinator.name" -}}{{ include "ringtrain.fullname" . }}-coordinator{{- end }}
{{- define "ringtrain.worker.name" -}}{{ include "ringtrain.fullname" . }}-worker{{- end }}
{{- define "ringtrain.etcd.name" -}}{{ include "ringtrain.fullname" . }}-etcd{{- end }}
{{- define "ringtrain.config.name" -}}{{ include "ringtrain.fullname" . }}-job{{- end }}

{{- define "ringtrain.shared.claim" -}}
{{- if .Values.shared.existingClaim }}{{ .Values.shared.existingClaim }}{{ else }}{{ include "ringtrain.fullname" . }}-shared{{ end }}
{{- end }}

{{/* The checked coordinator replica count (1 or 3). */}}
{{- define "ringtrain.coordinator.replicas" -}}
{{- $n := int .Values.coordinator.replicas }}
{{- if not (or (eq $n 1) (eq $n 3)) }}
{{- fail (printf "coordinator.replicas must be 1 or 3 (raft voters), got %v" .Values.coordinator.replicas) }}
{{- end }}
{{- $n }}
{{- end }}

{{/* Stable DNS name of coordinator pod i (call with (list $ i)). */}}
{{- define "ringtrain.coordinator.host" -}}
{{- $ctx := index . 0 }}{{ $i := index . 1 }}
{{- $svc := include "ringtrain.coordinator.name" $ctx }}
{{- printf "%s-%d.%s.%s.svc.%s" $svc (int $i) $svc $ctx.Release.Namespace $ctx.Values.clusterDomain }}
{{- end }}

{{/* --raft-peers: every voter as id=host:raftPort; the id is the pod name. */}}
{{- define "ringtrain.coordinator.raftPeers" -}}
{{- $peers := list }}
{{- $n := int (include "ringtrain.coordinator.replicas" .) }}
{{- range $i := until $n }}
{{- $peers = append $peers (printf "%s-%d=%s:%d" (include "ringtrain.coordinator.name" $) $i (include "ringtrain.coordinator.host" (list $ $i)) (int $.Values.coordinator.raftPort)) }}
{{- end }}
{{- join "," $peers }}
{{- end }}

{{/* --coordinator for workers: every replica's control address. */}}
{{- define "ringtrain.coordinator.addresses" -}}
{{- $addrs := list }}
{{- $n := int (include "ringtrain.coordinator.replicas" .) }}
{{- range $i := until $n }}
{{- $addrs = append $addrs (printf "%s:%d" (include "ringtrain.coordinator.host" (list $ $i)) (int $.Values.coordinator.port)) }}
{{- end }}
{{- join "," $addrs }}
{{- end }}

{{/* True when the chart runs its own etcd. */}}
{{- define "ringtrain.etcd.bundled" -}}
{{- if not .Values.etcd.endpoints }}true{{ end }}
{{- end }}

{{- define "ringtrain.etcd.host" -}}
{{- $svc := include "ringtrain.etcd.name" . }}
{{- printf "%s-0.%s.%s.svc.%s" $svc $svc .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* --etcd-endpoints for the coordinators. */}}
{{- define "ringtrain.etcd.endpoints" -}}
{{- if .Values.etcd.endpoints }}
{{- join "," .Values.etcd.endpoints }}
{{- else }}
{{- printf "http://%s:2379" (include "ringtrain.etcd.host" .) }}
{{- end }}
{{- end }}

{{/* The job name (job.name), required: it names the etcd keys and the output directory. */}}
{{- define "ringtrain.jobName" -}}
{{- required "job.name is required" (get .Values.job "name") }}
{{- end }}

{{/* The job's output directory: job.output_dir or <mountPath>/runs/<name>. */}}
{{- define "ringtrain.outputDir" -}}
{{- with get .Values.job "output_dir" }}{{ . }}{{ else }}{{ printf "%s/runs/%s" (trimSuffix "/" .Values.shared.mountPath) (include "ringtrain.jobName" .) }}{{ end }}
{{- end }}

{{- define "ringtrain.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{- define "ringtrain.workerImage" -}}
{{- if eq (toString .Values.worker.device) "cuda" }}
{{- $tag := default (printf "%s-cuda" (default .Chart.AppVersion .Values.image.tag)) .Values.image.cudaTag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- else }}
{{- include "ringtrain.image" . }}
{{- end }}
{{- end }}

{{/* Volumes shared by coordinator and worker pods. */}}
{{- define "ringtrain.commonVolumes" -}}
- name: shared
  persistentVolumeClaim:
    claimName: {{ include "ringtrain.shared.claim" . }}
- name: job
  configMap:
    name: {{ include "ringtrain.config.name" . }}
- name: cache
  emptyDir: {}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.secretName is required when tls.enabled" .Values.tls.secretName }}
{{- end }}
{{- end }}

{{- define "ringtrain.commonMounts" -}}
- name: shared
  mountPath: {{ .Values.shared.mountPath }}
# Its own directory: ConfigMap and Secret volumes are mounted read-only, so
# no other volume (the TLS Secret at /etc/ringtrain/tls) can be mounted
# inside one (the runtime cannot create the mount point there).
- name: job
  mountPath: /etc/ringtrain/job
  readOnly: true
- name: cache
  mountPath: /cache
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: {{ .Values.tls.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "ringtrain.podEnv" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
- name: XDG_CACHE_HOME
  value: /cache
- name: HOME
  value: /cache
{{- end }}

{{- /* The --tls-* flags of every coordinator and worker when tls.enabled. */ -}}
{{- define "ringtrain.tlsArgs" -}}
{{- if .Values.tls.enabled }}
- --tls-cert={{ .Values.tls.mountPath }}/tls.crt
- --tls-key={{ .Values.tls.mountPath }}/tls.key
- --tls-ca={{ .Values.tls.mountPath }}/ca.crt
- --tls-server-name={{ .Values.tls.serverName | default "ringtrain" }}
{{- end }}
{{- end }}

{{/* HTTP probe scheme: the HTTP servers follow the job's TLS setting. */}}
{{- define "ringtrain.httpScheme" -}}{{ if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}{{- end }}

{{/* Prometheus scrape annotations for a pod serving /metrics on port (dict "ctx" . "port" N). */}}
{{- define "ringtrain.scrapeAnnotations" -}}
{{- if .ctx.Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
prometheus.io/scheme: {{ include "ringtrain.httpScheme" .ctx | lower | quote }}
{{- end }}
{{- end }}
