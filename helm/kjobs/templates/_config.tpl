{{/*
_config.tpl — renders kjobs.cfg (libconfig syntax) from .Values.config. Every setting is written
with its libconfig type spelled out (strings quoted and escaped, integers as integers, floats
always with a decimal point, booleans as true/false), because libconfig does not convert between
types: `breaker_ratio = 1` would be an int where the loader asks for a float.
plugin.enabled / execHandler.enabled fill handlers.plugin / handlers.exec from the wiring they
set up in the pod. The ConfigMap, its hook copy and the checksum/config annotation all use
"kjobs.config", so the annotation changes whenever the file does.
*/}}

{{/* A libconfig string literal: backslash, quote and control characters escaped. */}}
{{- define "kjobs.cfg.str" -}}
"{{ toString . | replace "\\" "\\\\" | replace "\"" "\\\"" | replace "\n" "\\n" | replace "\r" "\\r" | replace "\t" "\\t" }}"
{{- end }}

{{/* A libconfig integer (values arrive from YAML as float64). */}}
{{- define "kjobs.cfg.int" -}}
{{- int64 . }}
{{- end }}

{{/* A libconfig float: always carries a '.' or an exponent. */}}
{{- define "kjobs.cfg.float" -}}
{{- $s := printf "%v" (float64 .) }}
{{- if regexMatch "[.eE]" $s }}{{ $s }}{{ else }}{{ $s }}.0{{ end }}
{{- end }}

{{/* A libconfig boolean. */}}
{{- define "kjobs.cfg.bool" -}}
{{- if . }}true{{ else }}false{{ end }}
{{- end }}

{{/* A libconfig array of strings. */}}
{{- define "kjobs.cfg.strlist" -}}
[ {{- range $i, $s := . }}{{ if $i }},{{ end }} {{ include "kjobs.cfg.str" $s }}{{ end }} ]
{{- end }}

{{/* The handler plugin path kjobs loads: the copied .so when plugin.enabled, else config. */}}
{{- define "kjobs.pluginPath" -}}
{{- if .Values.plugin.enabled }}
{{- printf "%s/%s" (trimSuffix "/" .Values.plugin.mountPath) (base .Values.plugin.path) }}
{{- else }}
{{- .Values.config.handlers.plugin }}
{{- end }}
{{- end }}

{{/* The whole kjobs.cfg file. */}}
{{- define "kjobs.config" -}}
{{- $c := .Values.config -}}
# kjobs.cfg — rendered by the kjobs Helm chart from .Values.config.
# Edit the chart values, not this file. Secrets come from the environment (KJOBS_RDKAFKA_*).
kafka = {
  bootstrap = {{ include "kjobs.cfg.str" $c.kafka.bootstrap }};
  group = {{ include "kjobs.cfg.str" $c.kafka.group }};
  client_id = {{ include "kjobs.cfg.str" $c.kafka.client_id }};
  group_instance_id = {{ include "kjobs.cfg.str" $c.kafka.group_instance_id }};
  properties = {{ include "kjobs.cfg.strlist" $c.kafka.properties }};
};
topics = {
  main = {{ include "kjobs.cfg.str" $c.topics.main }};
  retry_prefix = {{ include "kjobs.cfg.str" $c.topics.retry_prefix }};
  dlq = {{ include "kjobs.cfg.str" $c.topics.dlq }};
  partitions = {{ include "kjobs.cfg.int" $c.topics.partitions }};
  replication_factor = {{ include "kjobs.cfg.int" $c.topics.replication_factor }};
};
batch = {
  max_jobs = {{ include "kjobs.cfg.int" $c.batch.max_jobs }};
  max_wait_ms = {{ include "kjobs.cfg.int" $c.batch.max_wait_ms }};
  max_pending = {{ include "kjobs.cfg.int" $c.batch.max_pending }};
};
workers = {{ include "kjobs.cfg.int" $c.workers }};
retry = {
  delays = {{ include "kjobs.cfg.strlist" $c.retry.delays }};
  max_attempts = {{ include "kjobs.cfg.int" $c.retry.max_attempts }};
  exactly_once = {{ include "kjobs.cfg.bool" $c.retry.exactly_once }};
};
dlq = {
  breaker_consecutive = {{ include "kjobs.cfg.int" $c.dlq.breaker_consecutive }};
  breaker_window = {{ include "kjobs.cfg.int" $c.dlq.breaker_window }};
  breaker_ratio = {{ include "kjobs.cfg.float" $c.dlq.breaker_ratio }};
  breaker_min_window = {{ include "kjobs.cfg.int" $c.dlq.breaker_min_window }};
  breaker_cooldown = {{ include "kjobs.cfg.str" $c.dlq.breaker_cooldown }};
};
handlers = {
  plugin = {{ include "kjobs.cfg.str" (include "kjobs.pluginPath" .) }};
  exec = {{ include "kjobs.cfg.strlist" (ternary .Values.execHandler.command $c.handlers.exec .Values.execHandler.enabled) }};
  exec_types = {{ include "kjobs.cfg.strlist" $c.handlers.exec_types }};
  exec_timeout = {{ include "kjobs.cfg.str" $c.handlers.exec_timeout }};
};
http = {
  listen = {{ include "kjobs.cfg.str" $c.http.listen }};
};
shutdown = {
  grace_ms = {{ include "kjobs.cfg.int" $c.shutdown.grace_ms }};
};
log = {
  level = {{ include "kjobs.cfg.str" $c.log.level }};
};
{{- end }}
