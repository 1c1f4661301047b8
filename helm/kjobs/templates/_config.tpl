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

{{/* Bytes of a Kubernetes memory quantity ("512Mi", "1Gi", "500M", "1073741824"); 0 if empty. */}}
{{- define "kjobs.bytes" -}}
{{- $q := toString . -}}
{{- if not $q }}0{{ else }}
{{- $units := dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 -}}
{{- $digits := regexFind "^[0-9]+" $q -}}
{{- $unit := trimPrefix $digits $q -}}
{{- if or (not $digits) (not (hasKey $units $unit)) }}{{ fail (printf "resources.limits.memory %q: use an integer with Ki, Mi, Gi, Ti, k, M, G or T" $q) }}{{ end -}}
{{- mul (int64 $digits) (get $units $unit) -}}
{{- end }}
{{- end }}

{{/*
Worst-case memory of one pod (docs/kubernetes.md, "Memory"). One pod may own every partition of
the main topic and of each ladder topic (P = partitions x (1 + retry steps)); each holds at most
batch.max_pending jobs (back-pressure is per partition; batch.max_pending_bytes bounds them per
process too, but this model does not lean on it) and keeps alive the Fetch response they came in
(fetch.max.bytes: kjobs sizes it at a sixteenth of batch.max_pending_bytes, at least 256 KiB);
librdkafka's one prefetch queue (the image's librdkafka >= 2.2 has one per consumer) holds
queued.max.messages.kbytes (memory.queuedMaxMessagesKbytes, or kjobs' own a quarter of
batch.max_pending_bytes, at least 1 MiB, when 0); the copies of failed jobs waiting for their
acknowledgement hold at most batch.max_pending_bytes more, headers included. A librdkafka size
set in config.kafka.properties is the one counted (the last, as in kjobs; a message.max.bytes
above the response size raises it, as kjobs does without a fetch.max.bytes):
  bound = baseBytes + batch.max_pending_bytes + prefetch
        + P x (max_pending x (maxJobBytes + jobOverheadBytes) + fetch.max.bytes)
"kjobs.partitionsPerPod" is P; "kjobs.maxPending" is config.batch.max_pending, or when that is 0
the largest value (at most 10000, or batch.max_jobs when larger) whose bound fits
resources.limits.memory; rendering fails
when even batch.max_jobs does not fit, or an explicit max_pending exceeds the limit.
*/}}
{{- define "kjobs.partitionsPerPod" -}}
{{- mul (int64 .Values.config.topics.partitions) (add1 (len .Values.config.retry.delays)) -}}
{{- end }}

{{- define "kjobs.maxPending" -}}
{{- $c := .Values.config -}}
{{- $m := .Values.memory -}}
{{- $limit := include "kjobs.bytes" .Values.resources.limits.memory | int64 -}}
{{- $parts := include "kjobs.partitionsPerPod" . | int64 -}}
{{- $perJob := add (int64 $m.maxJobBytes) (int64 $m.jobOverheadBytes) -}}
{{- $pendingBytes := int64 $c.batch.max_pending_bytes -}}
{{- $prefetch := mul 1024 (max 1024 (div $pendingBytes 4096)) -}}
{{- if gt (int64 $m.queuedMaxMessagesKbytes) 0 -}}
{{- $prefetch = mul 1024 (int64 $m.queuedMaxMessagesKbytes) -}}
{{- end -}}
{{- $response := max 262144 (div $pendingBytes 16) -}}
{{- $userFetch := 0 -}}
{{- $userMessage := 0 -}}
{{- range $p := $c.kafka.properties -}}{{/* the user's own win, as in kjobs */}}
{{- $kv := splitn "=" 2 (toString $p) -}}
{{- $name := trim $kv._0 -}}
{{- if has $name (list "queued.max.messages.kbytes" "fetch.max.bytes" "message.max.bytes") -}}
{{- $v := trim (toString $kv._1) -}}
{{- if not (regexMatch "^[1-9][0-9]{0,9}$" $v) -}}
{{- fail (printf "config.kafka.properties: %s takes a positive whole number of at most 10 digits, with no unit or leading zero (the memory bound counts it)" $name) -}}
{{- end -}}
{{- $range := get (dict "queued.max.messages.kbytes" (list 1 2097151) "fetch.max.bytes" (list 1000 2147483135) "message.max.bytes" (list 1000 1000000000)) $name -}}
{{- if or (lt (int64 $v) (int64 (index $range 0))) (gt (int64 $v) (int64 (index $range 1))) -}}
{{- fail (printf "config.kafka.properties: %s must be %d..%d (librdkafka's range; a consumer's fetch.max.bytes may not be below message.max.bytes' least, 1000)" $name (int64 (index $range 0)) (int64 (index $range 1))) -}}
{{- end -}}
{{- if eq $name "queued.max.messages.kbytes" -}}
{{- $prefetch = mul 1024 (int64 $v) -}}
{{- else if eq $name "fetch.max.bytes" -}}
{{- $userFetch = int64 $v -}}
{{- else -}}
{{- $userMessage = int64 $v -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (gt $userFetch 0) (gt $userMessage $userFetch) -}}
{{- fail (printf "config.kafka.properties: fetch.max.bytes (%d) must be at least message.max.bytes (%d) (librdkafka refuses such a consumer)" $userFetch $userMessage) -}}
{{- end -}}
{{- if gt $userFetch 0 -}}
{{- $response = $userFetch -}}
{{- else if gt $userMessage $response -}}{{/* kjobs raises the response to it */}}
{{- $response = $userMessage -}}
{{- end -}}
{{- $fixed := add (int64 $m.baseBytes) $pendingBytes $prefetch (mul $parts $response) -}}
{{- $limitText := toString .Values.resources.limits.memory -}}
{{- $n := int64 $c.batch.max_pending -}}
{{- $maxJobs := int64 $c.batch.max_jobs -}}
{{- if and (gt $n 0) (lt $n $maxJobs) -}}
{{- fail (printf "config.batch.max_pending (%d) must be at least config.batch.max_jobs (%d), or 0 (automatic)" $n $maxJobs) -}}
{{- end -}}
{{- if eq $n 0 -}}
{{- $cap := max 10000 $maxJobs -}}{{/* kjobs' default, or batch.max_jobs when larger */}}
{{- $n = $cap -}}
{{- if gt $limit 0 -}}
{{- $n = min $cap (div (sub $limit $fixed) (mul $parts $perJob)) -}}
{{- if lt $n $maxJobs -}}
{{- fail (printf "memory: %d partitions per pod (topics.partitions x (1 + retry steps)) do not fit resources.limits.memory %s even with batch.max_pending = batch.max_jobs (%d): %d bytes fixed (memory.baseBytes, then config.batch.max_pending_bytes for the copies, a prefetch queue of %d bytes and a Fetch response of %d bytes per partition, both from config.batch.max_pending_bytes unless memory.queuedMaxMessagesKbytes or config.kafka.properties set them) and %d per pending job per partition leave room for %d pending jobs per partition; raise the limit, or lower config.batch.max_pending_bytes, memory.maxJobBytes, config.batch.max_jobs or the partitions (docs/kubernetes.md, Memory)" $parts $limitText $maxJobs $fixed $prefetch $response $perJob (max 0 $n)) -}}
{{- end -}}
{{- end -}}
{{- else if and (gt $limit 0) (gt (add $fixed (mul $parts $n $perJob)) $limit) -}}
{{- fail (printf "memory: batch.max_pending %d x %d partitions per pod can need %d bytes, above resources.limits.memory %s: lower it, set it to 0 (automatic), or raise the limit (docs/kubernetes.md, Memory)" $n $parts (add $fixed (mul $parts $n $perJob)) $limitText) -}}
{{- end -}}
{{- $n -}}
{{- end }}

{{/*
Secret settings of kjobs.cfg (KF_SECRET in processor/config.c's table, e.g.
kafka.schema_registry_password): never written to the ConfigMap. Their config.<group>.<name>
value is a Secret reference {existingSecret, key}; each one set becomes KJOBS_<GROUP>_<NAME> from
that Secret key, which the config loader reads over the file. Any config value shaped like that
is one, so a new secret setting needs only its values/schema entry (tests/helm checks the table).
*/}}
{{- define "kjobs.configSecretEnv" -}}
{{- range $g := keys .Values.config | sortAlpha }}
{{- $group := get $.Values.config $g }}
{{- if kindIs "map" $group }}
{{- range $n := keys $group | sortAlpha }}
{{- $s := get $group $n }}
{{- if and (kindIs "map" $s) (hasKey $s "existingSecret") $s.existingSecret }}
- name: {{ printf "KJOBS_%s_%s" $g $n | upper }}
  valueFrom:
    secretKeyRef:
      name: {{ $s.existingSecret | quote }}
      key: {{ $s.key | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The librdkafka properties memory.* sets, first in kafka.properties so the user's own win: each
only when not 0 (0 leaves it to kjobs, which sizes the prefetch queue from
batch.max_pending_bytes, and to librdkafka). A JSON array of "name=value" strings.
*/}}
{{- define "kjobs.memoryProperties" -}}
{{- $props := list -}}
{{- if gt (int64 .Values.memory.queuedMaxMessagesKbytes) 0 -}}
{{- $props = append $props (printf "queued.max.messages.kbytes=%d" (int64 .Values.memory.queuedMaxMessagesKbytes)) -}}
{{- end -}}
{{- if gt (int64 .Values.memory.maxPartitionFetchBytes) 0 -}}
{{- $props = append $props (printf "max.partition.fetch.bytes=%d" (int64 .Values.memory.maxPartitionFetchBytes)) -}}
{{- end -}}
{{- $props | toJson -}}
{{- end }}

{{/* The whole kjobs.cfg file. */}}
{{- define "kjobs.config" -}}
{{- $c := .Values.config -}}
# kjobs.cfg — rendered by the kjobs Helm chart from .Values.config.
# Edit the chart values, not this file. Secrets come from the environment (KJOBS_RDKAFKA_*,
# and KJOBS_<GROUP>_<NAME> of the secret settings, from Secrets).
kafka = {
  bootstrap = {{ include "kjobs.cfg.str" $c.kafka.bootstrap }};
  group = {{ include "kjobs.cfg.str" $c.kafka.group }};
  client_id = {{ include "kjobs.cfg.str" $c.kafka.client_id }};
  group_instance_id = {{ include "kjobs.cfg.str" $c.kafka.group_instance_id }};
  group_protocol = {{ include "kjobs.cfg.str" $c.kafka.group_protocol }};
  properties = {{ include "kjobs.cfg.strlist" (concat (include "kjobs.memoryProperties" . | fromJsonArray) $c.kafka.properties) }};
  schema_registry_url = {{ include "kjobs.cfg.str" $c.kafka.schema_registry_url }};
  schema_registry_user = {{ include "kjobs.cfg.str" $c.kafka.schema_registry_user }};
  # schema_registry_password: a secret, from the environment (kjobs.configSecretEnv)
  schema_registry_ca_file = {{ include "kjobs.cfg.str" $c.kafka.schema_registry_ca_file }};
  schema_registry_cert_file = {{ include "kjobs.cfg.str" $c.kafka.schema_registry_cert_file }};
  schema_registry_key_file = {{ include "kjobs.cfg.str" $c.kafka.schema_registry_key_file }};
  # schema_registry_key_password: a secret, from the environment (kjobs.configSecretEnv)
  schema_registry_timeout = {{ include "kjobs.cfg.str" $c.kafka.schema_registry_timeout }};
  schema_registry_cache_size = {{ include "kjobs.cfg.int" $c.kafka.schema_registry_cache_size }};
  schema_registry_unknown_ttl = {{ include "kjobs.cfg.str" $c.kafka.schema_registry_unknown_ttl }};
};
topics = {
  main = {{ include "kjobs.cfg.str" $c.topics.main }};
  retry_prefix = {{ include "kjobs.cfg.str" $c.topics.retry_prefix }};
  dlq = {{ include "kjobs.cfg.str" $c.topics.dlq }};
  partitions = {{ include "kjobs.cfg.int" $c.topics.partitions }};
  replication_factor = {{ include "kjobs.cfg.int" $c.topics.replication_factor }};
  min_insync_replicas = {{ include "kjobs.cfg.int" $c.topics.min_insync_replicas }};
  retention = {{ include "kjobs.cfg.str" $c.topics.retention }};
  dlq_retention = {{ include "kjobs.cfg.str" $c.topics.dlq_retention }};
};
batch = {
  max_jobs = {{ include "kjobs.cfg.int" $c.batch.max_jobs }};
  max_wait_ms = {{ include "kjobs.cfg.int" $c.batch.max_wait_ms }};
  max_pending = {{ include "kjobs.maxPending" . }};
  max_pending_bytes = {{ include "kjobs.cfg.int" $c.batch.max_pending_bytes }};
  ordering = {{ include "kjobs.cfg.str" $c.batch.ordering }};
  key_lanes = {{ include "kjobs.cfg.int" $c.batch.key_lanes }};
};
workers = {{ include "kjobs.cfg.int" $c.workers }};
retry = {
  delays = {{ include "kjobs.cfg.strlist" $c.retry.delays }};
  max_attempts = {{ include "kjobs.cfg.int" $c.retry.max_attempts }};
  in_place_attempts = {{ include "kjobs.cfg.int" $c.retry.in_place_attempts }};
  in_place_delay = {{ include "kjobs.cfg.str" $c.retry.in_place_delay }};
  exactly_once = {{ include "kjobs.cfg.bool" $c.retry.exactly_once }};
  ordering = {{ include "kjobs.cfg.str" $c.retry.ordering }};
};
limits = (
{{- range $i, $l := $c.limits }}
  {{ if $i }},{{ end }}{ type = {{ include "kjobs.cfg.str" $l.type }};
  {{- if hasKey $l "rate" }} rate = {{ if kindIs "string" $l.rate }}{{ include "kjobs.cfg.str" $l.rate }}{{ else }}{{ include "kjobs.cfg.float" $l.rate }}{{ end }};{{ end }}
  {{- if hasKey $l "burst" }} burst = {{ include "kjobs.cfg.int" $l.burst }};{{ end }}
  {{- if hasKey $l "concurrency" }} concurrency = {{ include "kjobs.cfg.int" $l.concurrency }};{{ end }}
  {{- if hasKey $l "scope" }} scope = {{ include "kjobs.cfg.str" $l.scope }};{{ end }} }
{{- end }}
);
schedule = {
  max_delay = {{ include "kjobs.cfg.str" $c.schedule.max_delay }};
{{- with $c.schedule.periodic }}
  periodic = (
{{- range $i, $e := . }}
    {{ if $i }},{{ else }} {{ end }}{ name = {{ include "kjobs.cfg.str" $e.name }}; cron = {{ include "kjobs.cfg.str" $e.cron }}; type = {{ include "kjobs.cfg.str" $e.type }};
{{- range $f := list "time_zone" "key" "payload" "missed" "catch_up" "jitter" }}
{{- if hasKey $e $f }} {{ $f }} = {{ include "kjobs.cfg.str" (get $e $f) }};{{ end }}
{{- end }}
{{- with $e.meta }} meta = { {{- range $k := keys . | sortAlpha }} {{ $k }} = {{ include "kjobs.cfg.str" (get $e.meta $k) }};{{ end }} };{{ end }} }
{{- end }}
  );
{{- end }}
};
dlq = {
  breaker_consecutive = {{ include "kjobs.cfg.int" $c.dlq.breaker_consecutive }};
  breaker_window = {{ include "kjobs.cfg.int" $c.dlq.breaker_window }};
  breaker_ratio = {{ include "kjobs.cfg.float" $c.dlq.breaker_ratio }};
  breaker_min_window = {{ include "kjobs.cfg.int" $c.dlq.breaker_min_window }};
  breaker_cooldown = {{ include "kjobs.cfg.str" $c.dlq.breaker_cooldown }};
  crash_loop_limit = {{ include "kjobs.cfg.int" $c.dlq.crash_loop_limit }};
};
handlers = {
  plugin = {{ include "kjobs.cfg.str" (include "kjobs.pluginPath" .) }};
  exec = {{ include "kjobs.cfg.strlist" (ternary .Values.execHandler.command $c.handlers.exec .Values.execHandler.enabled) }};
  exec_types = {{ include "kjobs.cfg.strlist" $c.handlers.exec_types }};
  exec_timeout = {{ include "kjobs.cfg.str" $c.handlers.exec_timeout }};
  exec_protocol = {{ include "kjobs.cfg.str" $c.handlers.exec_protocol }};
  timeout = {{ include "kjobs.cfg.str" $c.handlers.timeout }};
  timeouts = {{ include "kjobs.cfg.strlist" $c.handlers.timeouts }};
  timeout_grace = {{ include "kjobs.cfg.str" $c.handlers.timeout_grace }};
};
http = {
  listen = {{ include "kjobs.cfg.str" $c.http.listen }};
};
shutdown = {
  grace_ms = {{ include "kjobs.cfg.int" $c.shutdown.grace_ms }};
};
ui = {
  report_interval = {{ include "kjobs.cfg.str" $c.ui.report_interval }};
  listen = {{ include "kjobs.cfg.str" $c.ui.listen }};
  allow_actions = {{ include "kjobs.cfg.bool" $c.ui.allow_actions }};
  on_worker = {{ include "kjobs.cfg.bool" $c.ui.on_worker }};
};
log = {
  level = {{ include "kjobs.cfg.str" $c.log.level }};
};
{{- end }}
