{{/*
_helpers.tpl — named templates shared by the kjobs chart: names and labels (helm create's set),
the HTTP port derived from config.http.listen, the drain-aware termination grace, the Kafka
credential env/volumes shared by the Deployment and the topics hook Job (every auth mode:
SASL PLAIN/SCRAM, OAUTHBEARER/OIDC, GSSAPI, TLS and mTLS), and validateValues,
which collects every problem with the values and reports them in one `fail`.
The kjobs.cfg renderer lives in _config.tpl.
*/}}

{{/*
Expand the name of the chart.
*/}}
{{- define "kjobs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name, truncated at 63 chars (DNS label limit).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "kjobs.fullname" -}}
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
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "kjobs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels: every object the chart renders, and every pod template, carries these, then the
user's commonLabels (the schema keeps those off the app.kubernetes.io/ and helm.sh/ keys).
*/}}
{{- define "kjobs.labels" -}}
helm.sh/chart: {{ include "kjobs.chart" . }}
{{ include "kjobs.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kjobs
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
An object's `annotations:` block: its own annotations over commonAnnotations (its own win on
the same key), or nothing when both are empty. Call with (dict "ctx" $ "own" $annotations).
*/}}
{{- define "kjobs.annotations" -}}
{{- $all := merge (deepCopy (default (dict) .own)) (deepCopy (default (dict) .ctx.Values.commonAnnotations)) }}
{{- with $all }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Selector labels: the immutable subset used by the Deployment selector, Service, PDB and spread.
*/}}
{{- define "kjobs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kjobs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector of the worker pods (Deployment, Service, PDB, spread): the selector labels plus
component=worker, so the topics hook Job's pods are never counted or selected as workers.
*/}}
{{- define "kjobs.workerSelectorLabels" -}}
{{ include "kjobs.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{/*
Name of the ServiceAccount to use.
*/}}
{{- define "kjobs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kjobs.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The kjobs image reference: [registry/]repository, then @digest when one is set (the tag is then
not used: a digest names one image), else :tag (default the chart's appVersion).
*/}}
{{- define "kjobs.image" -}}
{{- $repo := .Values.image.repository }}
{{- with .Values.image.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The TCP ports of config.kafka.bootstrap, sorted and unique, one per line: the restricted
NetworkPolicy's egress allows these. Each entry is librdkafka's [proto://]host[:port]: "host:port",
"[v6addr]:port", or a host without a port, which librdkafka connects to on 9092 (its default).
A bare IPv6 address (more than one ':' and no brackets) has no port either. Ports outside
1-65535 are never listed: validateValues refuses them (kjobs.bootstrapBadPorts).
"embedded" (the in-process demo broker) has no port.
*/}}
{{- define "kjobs.bootstrapPortList" -}}
{{- $ports := list }}
{{- if ne (toString .Values.config.kafka.bootstrap) "embedded" }}
{{- range splitList "," (toString .Values.config.kafka.bootstrap) }}
{{- $h := regexReplaceAll "^[A-Za-z_]+://" (trim .) "" }}
{{- if $h }}
{{- $p := "9092" }}
{{- if hasPrefix "[" $h }}
{{- with regexFind "\\]:[0-9]+$" $h }}{{ $p = trimPrefix "]:" . }}{{ end }}
{{- else if eq (len (splitList ":" $h)) 2 }}
{{- $p = last (splitList ":" $h) | default "(none)" }}
{{- end }}
{{- $ports = append $ports $p }}
{{- end }}
{{- end }}
{{- end }}
{{- join "\n" $ports }}
{{- end }}
{{- define "kjobs.bootstrapPorts" -}}
{{- $ports := list }}
{{- range splitList "\n" (include "kjobs.bootstrapPortList" .) }}
{{- if and (regexMatch "^[0-9]{1,5}$" .) (ge (atoi .) 1) (le (atoi .) 65535) }}{{ $ports = append $ports (atoi .) }}{{ end }}
{{- end }}
{{- range $ports | uniq | sortAlpha }}
{{ . }}
{{- end }}
{{- end }}

{{/*
The TCP port of config.http.listen ("0.0.0.0:8080", "[::]:8080", ":8080" → 8080). Probes, the
container port and the Service target all use it, so they cannot disagree with the listener.
*/}}
{{- define "kjobs.httpPort" -}}
{{- $listen := toString .Values.config.http.listen }}
{{- $port := regexFind "[0-9]+$" $listen }}
{{- if $port }}{{ $port }}{{ else }}8080{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: explicit when set, else ceil(grace_ms / 1000) + margin. Either way
validateValues checks it exceeds the drain time, so the kubelet never SIGKILLs a draining pod.
*/}}
{{- define "kjobs.terminationGrace" -}}
{{- if gt (int64 .Values.terminationGracePeriodSeconds) 0 }}
{{- int64 .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- $ms := int64 .Values.config.shutdown.grace_ms }}
{{- add (div (add $ms 999) 1000) (int64 .Values.terminationGraceMarginSeconds) }}
{{- end }}
{{- end }}

{{/*
Path of the mounted broker CA file (KJOBS_RDKAFKA_SSL_CA_LOCATION).
*/}}
{{- define "kjobs.caFile" -}}
{{- printf "%s/ca.crt" (trimSuffix "/" .Values.kafkaAuth.ca.mountPath) }}
{{- end }}

{{/*
Which auth pieces are in use. Each returns "true" or "" so it can be used in `if`.
saslUserPass: PLAIN/SCRAM (username + password); oauth: OAUTHBEARER with OIDC client
credentials; gssapi: Kerberos; clientCert: mTLS; tls: the connection is TLS (SSL or SASL_SSL).
*/}}
{{- define "kjobs.auth.saslUserPass" -}}
{{- if has (toString .Values.kafkaAuth.saslMechanism) (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512") }}true{{ end }}
{{- end }}
{{- define "kjobs.auth.oauth" -}}
{{- if eq (toString .Values.kafkaAuth.saslMechanism) "OAUTHBEARER" }}true{{ end }}
{{- end }}
{{- define "kjobs.auth.gssapi" -}}
{{- if eq (toString .Values.kafkaAuth.saslMechanism) "GSSAPI" }}true{{ end }}
{{- end }}
{{- define "kjobs.auth.tls" -}}
{{- if has (toString .Values.kafkaAuth.securityProtocol) (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/*
OAUTHBEARER scopes as librdkafka wants them (one space-separated string) and extensions as
"key=value,key=value" (keys sorted), the format of both librdkafka and KEDA.
*/}}
{{- define "kjobs.oauthScopes" -}}
{{- join " " .Values.kafkaAuth.oauthbearer.scopes }}
{{- end }}
{{- define "kjobs.oauthExtensions" -}}
{{- $ext := .Values.kafkaAuth.oauthbearer.extensions }}
{{- $out := list }}
{{- range $k := keys $ext | sortAlpha }}{{ $out = append $out (printf "%s=%v" $k (get $ext $k)) }}{{ end }}
{{- join "," $out }}
{{- end }}

{{/*
Kafka credential env: KJOBS_RDKAFKA_<PROP> with `_` for `.`, which the config loader maps to
librdkafka properties. Secrets stay in Secrets: every secret value (password, key password,
OIDC client id and secret) comes in through secretKeyRef; files (CA, client certificate and key,
keytab, krb5.conf) are mounted read-only by kjobs.authVolumes/kjobs.authVolumeMounts and their
paths set here. The same Secret keys feed KEDA's TriggerAuthentication (keda.yaml).
*/}}
{{- define "kjobs.kafkaAuthEnv" -}}
{{- with .Values.kafkaAuth }}
{{- if .securityProtocol }}
- name: KJOBS_RDKAFKA_SECURITY_PROTOCOL
  value: {{ .securityProtocol | quote }}
{{- end }}
{{- if .saslMechanism }}
- name: KJOBS_RDKAFKA_SASL_MECHANISM
  value: {{ .saslMechanism | quote }}
{{- end }}
{{- if include "kjobs.auth.saslUserPass" $ }}
{{- if .username }}
- name: KJOBS_RDKAFKA_SASL_USERNAME
  value: {{ .username | quote }}
{{- else }}
- name: KJOBS_RDKAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret | quote }}
      key: {{ .usernameKey | quote }}
{{- end }}
- name: KJOBS_RDKAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret | quote }}
      key: {{ .passwordKey | quote }}
{{- end }}
{{- if include "kjobs.auth.oauth" $ }}
- name: KJOBS_RDKAFKA_SASL_OAUTHBEARER_METHOD
  value: "oidc"
- name: KJOBS_RDKAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL
  value: {{ .oauthbearer.tokenEndpointUrl | quote }}
- name: KJOBS_RDKAFKA_SASL_OAUTHBEARER_CLIENT_ID
  valueFrom:
    secretKeyRef:
      name: {{ .oauthbearer.existingSecret | quote }}
      key: {{ .oauthbearer.clientIdKey | quote }}
- name: KJOBS_RDKAFKA_SASL_OAUTHBEARER_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .oauthbearer.existingSecret | quote }}
      key: {{ .oauthbearer.clientSecretKey | quote }}
{{- with (include "kjobs.oauthScopes" $) }}
- name: KJOBS_RDKAFKA_SASL_OAUTHBEARER_SCOPE
  value: {{ . | quote }}
{{- end }}
{{- with (include "kjobs.oauthExtensions" $) }}
- name: KJOBS_RDKAFKA_SASL_OAUTHBEARER_EXTENSIONS
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if include "kjobs.auth.gssapi" $ }}
- name: KJOBS_RDKAFKA_SASL_KERBEROS_SERVICE_NAME
  value: {{ .gssapi.serviceName | quote }}
- name: KJOBS_RDKAFKA_SASL_KERBEROS_PRINCIPAL
  value: {{ .gssapi.principal | quote }}
- name: KJOBS_RDKAFKA_SASL_KERBEROS_KEYTAB
  value: {{ printf "%s/krb5.keytab" (trimSuffix "/" .gssapi.mountPath) | quote }}
# MIT Kerberos (kinit, and the GSSAPI plugin of Cyrus SASL) reads its realms and KDCs here
- name: KRB5_CONFIG
  value: {{ printf "%s/krb5.conf" (trimSuffix "/" .gssapi.mountPath) | quote }}
{{- end }}
{{- if .ca.existingSecret }}
- name: KJOBS_RDKAFKA_SSL_CA_LOCATION
  value: {{ include "kjobs.caFile" $ | quote }}
{{- end }}
{{- if .clientCert.existingSecret }}
- name: KJOBS_RDKAFKA_SSL_CERTIFICATE_LOCATION
  value: {{ printf "%s/tls.crt" (trimSuffix "/" .clientCert.mountPath) | quote }}
- name: KJOBS_RDKAFKA_SSL_KEY_LOCATION
  value: {{ printf "%s/tls.key" (trimSuffix "/" .clientCert.mountPath) | quote }}
{{- if .clientCert.keyPasswordKey }}
- name: KJOBS_RDKAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .clientCert.existingSecret | quote }}
      key: {{ .clientCert.keyPasswordKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Volumes and mounts for the credential files: broker CA, client certificate + key, keytab and
krb5.conf. Each projects only the keys it needs, under fixed file names, read-only; the private
key, keytab and krb5.conf are 0440: readable by the pod's fsGroup (the kjobs user's group) only;
validateValues refuses them without podSecurityContext.fsGroup.
*/}}
{{- define "kjobs.authVolumes" -}}
{{- with .Values.kafkaAuth }}
{{- if .ca.existingSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .ca.existingSecret | quote }}
    defaultMode: 0444
    items:
      - key: {{ .ca.key | quote }}
        path: ca.crt
{{- end }}
{{- if .clientCert.existingSecret }}
- name: kafka-client-cert
  secret:
    secretName: {{ .clientCert.existingSecret | quote }}
    defaultMode: 0440
    items:
      - key: {{ .clientCert.certKey | quote }}
        path: tls.crt
      - key: {{ .clientCert.keyKey | quote }}
        path: tls.key
{{- end }}
{{- if include "kjobs.auth.gssapi" $ }}
- name: kafka-kerberos
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ .gssapi.keytabSecret | quote }}
          items:
            - key: {{ .gssapi.keytabKey | quote }}
              path: krb5.keytab
      - configMap:
          name: {{ .gssapi.krb5ConfigMap | quote }}
          items:
            - key: {{ .gssapi.krb5ConfigKey | quote }}
              path: krb5.conf
{{- end }}
{{- end }}
{{- end }}
{{- define "kjobs.authVolumeMounts" -}}
{{- with .Values.kafkaAuth }}
{{- if .ca.existingSecret }}
- name: kafka-ca
  mountPath: {{ .ca.mountPath | quote }}
  readOnly: true
{{- end }}
{{- if .clientCert.existingSecret }}
- name: kafka-client-cert
  mountPath: {{ .clientCert.mountPath | quote }}
  readOnly: true
{{- end }}
{{- if include "kjobs.auth.gssapi" $ }}
- name: kafka-kerberos
  mountPath: {{ .gssapi.mountPath | quote }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/*
"true" when the librdkafka property (the name passed) holds a secret value, which must come
from a Secret, never the ConfigMap or a literal env value. The list is librdkafka's: the
properties flagged _RK_SENSITIVE in src/rdkafka_conf.c (CONFIGURATION.md's table does not mark
them; checked at confluentinc/librdkafka 4c3b017, July 2026) that hold a secret rather than a
path: ssl.key.password, ssl.key.pem, ssl.keystore.password, sasl.username, sasl.password,
sasl.oauthbearer.config, sasl.oauthbearer.client.secret,
sasl.oauthbearer.assertion.private.key.passphrase, sasl.oauthbearer.assertion.private.key.pem.
(Also sensitive there but paths or public: ssl.key.location, ssl.ca.pem,
sasl.oauthbearer.assertion.private.key.file; a path is fine in the ConfigMap.)
Beyond the list, any name containing password, passphrase or secret, or ending in key.pem, so
a property a later librdkafka adds is covered too.
*/}}
{{- define "kjobs.sensitiveProperty" -}}
{{- $p := lower (toString .) }}
{{- if or (has $p (list "sasl.username" "sasl.password" "sasl.oauthbearer.config" "ssl.key.pem" "ssl.key.password" "ssl.keystore.password" "sasl.oauthbearer.client.secret" "sasl.oauthbearer.assertion.private.key.passphrase" "sasl.oauthbearer.assertion.private.key.pem")) (regexMatch "password|passphrase|secret|(^|\\.)key\\.pem$" $p) }}true{{ end }}
{{- end }}

{{/*
Upper bound of the number of pods the chart can run: the autoscaler's maximum, else replicaCount.
*/}}
{{- define "kjobs.maxPods" -}}
{{- if .Values.autoscaling.keda.enabled }}{{ int64 .Values.autoscaling.keda.maxReplicaCount }}
{{- else if .Values.autoscaling.hpa.enabled }}{{ int64 .Values.autoscaling.hpa.maxReplicas }}
{{- else }}{{ int64 .Values.replicaCount }}{{ end }}
{{- end }}

{{/*
validateValues: every check appends a message; all of them are reported in one `fail`, so a
user fixes the whole values file in one round (Bitnami's pattern).
*/}}
{{- define "kjobs.validateValues" -}}
{{- $msgs := list }}
{{- $v := .Values }}
{{- $c := $v.config }}
{{- $partitions := int64 $c.topics.partitions }}
{{- $embedded := eq (toString $c.kafka.bootstrap) "embedded" }}

{{- /* The console listens on all interfaces in its pod: kjobs ui refuses that without a token. */}}
{{- if and $v.console.enabled (not (and (kindIs "map" $c.ui.token) $c.ui.token.existingSecret)) }}
{{- $msgs = append $msgs "console.enabled needs config.ui.token.existingSecret: the console listens on all interfaces of its pod, and kjobs ui refuses that without a token (docs/console.md, \"Security\")." }}
{{- end }}

{{- /* The console on the workers' listener (all interfaces) needs the token too. */}}
{{- if and $c.ui.on_worker (not (and (kindIs "map" $c.ui.token) $c.ui.token.existingSecret)) }}
{{- $msgs = append $msgs "config.ui.on_worker needs config.ui.token.existingSecret: the workers' listener (config.http.listen) is on all interfaces of the pod, and kjobs run refuses to serve the console there without a token (docs/console.md, \"Security\")." }}
{{- end }}

{{- /* Replicas beyond the partition count get no main-topic partition. */}}
{{- if not $v.allowIdleReplicas }}
{{- if and (not $v.autoscaling.hpa.enabled) (not $v.autoscaling.keda.enabled) (gt (int64 $v.replicaCount) $partitions) }}
{{- $msgs = append $msgs (printf "replicaCount (%d) exceeds config.topics.partitions (%d): the extra pods would sit idle. Lower it, add partitions, or set allowIdleReplicas=true." (int64 $v.replicaCount) $partitions) }}
{{- end }}
{{- if and $v.autoscaling.hpa.enabled (gt (int64 $v.autoscaling.hpa.maxReplicas) $partitions) }}
{{- $msgs = append $msgs (printf "autoscaling.hpa.maxReplicas (%d) exceeds config.topics.partitions (%d): pods beyond the partition count sit idle. Lower it, or set allowIdleReplicas=true." (int64 $v.autoscaling.hpa.maxReplicas) $partitions) }}
{{- end }}
{{- if and $v.autoscaling.keda.enabled (gt (int64 $v.autoscaling.keda.maxReplicaCount) $partitions) }}
{{- $msgs = append $msgs (printf "autoscaling.keda.maxReplicaCount (%d) exceeds config.topics.partitions (%d): pods beyond the partition count sit idle. Lower it, or set allowIdleReplicas=true." (int64 $v.autoscaling.keda.maxReplicaCount) $partitions) }}
{{- end }}
{{- end }}

{{- /* A PodDisruptionBudget no eviction can satisfy blocks every node drain for good. */}}
{{- if $v.pdb.enabled }}
{{- $minAv := toString $v.pdb.minAvailable }}
{{- $maxPods := int64 (include "kjobs.maxPods" .) }}
{{- if ne $minAv "" }}
{{- if and (hasSuffix "%" $minAv) (ge (atoi (trimSuffix "%" $minAv)) 100) }}
{{- $msgs = append $msgs (printf "pdb.minAvailable (%s) blocks every eviction: node drains would hang. Use a lower value, or pdb.maxUnavailable." $minAv) }}
{{- else if and (regexMatch "^[0-9]+$" $minAv) (ge (int64 $minAv) $maxPods) }}
{{- $msgs = append $msgs (printf "pdb.minAvailable (%s) is not below the most pods the chart runs (%d: replicaCount, or the autoscaler's maximum): it blocks every eviction and node drains would hang. Lower it, or use pdb.maxUnavailable." $minAv $maxPods) }}
{{- end }}
{{- else if regexMatch "^0+%?$" (toString $v.pdb.maxUnavailable) }}
{{- $msgs = append $msgs (printf "pdb.maxUnavailable (%s) blocks every eviction: node drains would hang. Use 1 (one pod at a time, each draining gracefully)." (toString $v.pdb.maxUnavailable)) }}
{{- end }}
{{- end }}

{{- /* Autoscalers. */}}
{{- if and $v.autoscaling.hpa.enabled $v.autoscaling.keda.enabled }}
{{- $msgs = append $msgs "autoscaling.hpa.enabled and autoscaling.keda.enabled are both true: KEDA creates its own HPA; enable one." }}
{{- end }}
{{- if and $v.autoscaling.hpa.enabled (gt (int64 $v.autoscaling.hpa.minReplicas) (int64 $v.autoscaling.hpa.maxReplicas)) }}
{{- $msgs = append $msgs "autoscaling.hpa.minReplicas exceeds autoscaling.hpa.maxReplicas." }}
{{- end }}
{{- if and $v.autoscaling.hpa.enabled (eq (int64 $v.autoscaling.hpa.targetCPUUtilizationPercentage) 0) (eq (int64 $v.autoscaling.hpa.targetMemoryUtilizationPercentage) 0) }}
{{- $msgs = append $msgs "autoscaling.hpa.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage (both are 0)." }}
{{- end }}
{{- /* Utilization is usage / request: without the request the HPA has nothing to divide by and
       never scales (FailedGetResourceMetric). Empty or null means no request (kjobs.resources). */}}
{{- if $v.autoscaling.hpa.enabled }}
{{- $requests := $v.resources.requests | default dict }}
{{- range $r := list (dict "res" "cpu" "target" "targetCPUUtilizationPercentage") (dict "res" "memory" "target" "targetMemoryUtilizationPercentage") }}
{{- $pct := int64 (get $v.autoscaling.hpa $r.target) }}
{{- if and (gt $pct 0) (eq (toString (get $requests $r.res | default "")) "") }}
{{- $msgs = append $msgs (printf "autoscaling.hpa.%s is %d but resources.requests.%s is not set: the HPA computes %s utilization as a percentage of the request and cannot scale without one. Set resources.requests.%s, or set autoscaling.hpa.%s to 0." $r.target $pct $r.res $r.res $r.res $r.target) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.autoscaling.keda.enabled $v.autoscaling.keda.limitToPartitionsWithLag $v.allowIdleReplicas }}
{{- $msgs = append $msgs "autoscaling.keda.limitToPartitionsWithLag and allowIdleReplicas (KEDA's allowIdleConsumers) are both true: KEDA refuses the combination." }}
{{- end }}
{{- if and $v.autoscaling.keda.enabled (gt (int64 $v.autoscaling.keda.fallback.failureThreshold) 0) (gt (int64 $v.autoscaling.keda.fallback.replicas) (int64 $v.autoscaling.keda.maxReplicaCount)) }}
{{- $msgs = append $msgs "autoscaling.keda.fallback.replicas exceeds autoscaling.keda.maxReplicaCount." }}
{{- end }}
{{- if and $v.autoscaling.keda.enabled (gt (int64 $v.autoscaling.keda.minReplicaCount) (int64 $v.autoscaling.keda.maxReplicaCount)) }}
{{- $msgs = append $msgs "autoscaling.keda.minReplicaCount exceeds autoscaling.keda.maxReplicaCount." }}
{{- end }}

{{- /* The embedded broker lives inside one process: it cannot be shared by pods or reached by KEDA. */}}
{{- if $embedded }}
{{- if or (gt (int64 $v.replicaCount) 1) $v.autoscaling.hpa.enabled $v.autoscaling.keda.enabled $v.topicsJob.enabled }}
{{- $msgs = append $msgs "config.kafka.bootstrap is \"embedded\": each pod would run its own private broker. Point it at a real Kafka cluster to use replicas, autoscaling or the topics hook Job." }}
{{- end }}
{{- end }}

{{- /* Drain: the kubelet must not SIGKILL before shutdown.grace_ms has elapsed. */}}
{{- $grace := int64 (include "kjobs.terminationGrace" .) }}
{{- if le (mul $grace 1000) (int64 $c.shutdown.grace_ms) }}
{{- $msgs = append $msgs (printf "terminationGracePeriodSeconds (%d s) must exceed config.shutdown.grace_ms (%d ms): kjobs needs the drain time plus time to commit and leave the group. Set it to 0 to compute it." $grace (int64 $c.shutdown.grace_ms)) }}
{{- end }}

{{- /* Broker ports: each must be a TCP port (the NetworkPolicy's egress rule names them). */}}
{{- range splitList "\n" (include "kjobs.bootstrapPortList" .) }}
{{- if and . (not (and (regexMatch "^[0-9]{1,5}$" .) (ge (atoi .) 1) (le (atoi .) 65535))) }}
{{- $msgs = append $msgs (printf "config.kafka.bootstrap names port %q: a broker port must be 1-65535 (an entry without a port uses 9092)." .) }}
{{- end }}
{{- end }}

{{- /* HTTP listener: probes and Service reach it on the pod IP. */}}
{{- $listen := toString $c.http.listen }}
{{- if not (regexMatch "^(\\[[0-9a-fA-F:.]*\\]|[^:\\[\\]]*):[0-9]{1,5}$" $listen) }}
{{- $msgs = append $msgs (printf "config.http.listen (%q) must be HOST:PORT, e.g. 0.0.0.0:8080." $listen) }}
{{- else if or (lt (atoi (regexFind "[0-9]+$" $listen)) 1) (gt (atoi (regexFind "[0-9]+$" $listen)) 65535) }}
{{- $msgs = append $msgs (printf "config.http.listen (%q): the port must be 1-65535 (it is the containerPort, probes' and Service's target)." $listen) }}
{{- else if regexMatch "^(127\\.[0-9.]+|localhost|\\[::1\\]):" $listen }}
{{- $msgs = append $msgs (printf "config.http.listen (%q) binds loopback: the kubelet's probes and Prometheus could not reach it. Use 0.0.0.0:PORT." $listen) }}
{{- end }}

{{- /* The client key and the keytab are mounted 0440 (kjobs.authVolumes): owned by root and the
       pod's fsGroup, which Kubernetes also gives the containers as a supplementary group. Without
       fsGroup they are root:root and the kjobs user (10001) cannot read them. A wider mode
       (0444) would hand the key to every user of every container of the pod, so fsGroup it is. */}}
{{- if kindIs "invalid" (index $v.podSecurityContext "fsGroup") }}
{{- $keyMounts := list }}
{{- if $v.kafkaAuth.clientCert.existingSecret }}{{ $keyMounts = append $keyMounts "kafkaAuth.clientCert (tls.key)" }}{{ end }}
{{- if include "kjobs.auth.gssapi" . }}{{ $keyMounts = append $keyMounts "kafkaAuth.gssapi (krb5.keytab)" }}{{ end }}
{{- if $keyMounts }}
{{- $msgs = append $msgs (printf "podSecurityContext.fsGroup is unset but the chart mounts %s with mode 0440, readable by root and the fsGroup only: the kjobs user could not read it. Set podSecurityContext.fsGroup (the image's kjobs group is 10001)." (join " and " $keyMounts)) }}
{{- end }}
{{- end }}

{{- /* Mount paths of the kjobs container (the hook Job's are a subset): the API server refuses
       a pod with two mounts at one path. */}}
{{- $mounts := list (dict "path" "/etc/kjobs/config" "from" "the chart's config mount") (dict "path" "/tmp" "from" "the chart's /tmp") }}
{{- if $v.kafkaAuth.ca.existingSecret }}{{ $mounts = append $mounts (dict "path" $v.kafkaAuth.ca.mountPath "from" "kafkaAuth.ca.mountPath") }}{{ end }}
{{- if $v.kafkaAuth.clientCert.existingSecret }}{{ $mounts = append $mounts (dict "path" $v.kafkaAuth.clientCert.mountPath "from" "kafkaAuth.clientCert.mountPath") }}{{ end }}
{{- if include "kjobs.auth.gssapi" . }}{{ $mounts = append $mounts (dict "path" $v.kafkaAuth.gssapi.mountPath "from" "kafkaAuth.gssapi.mountPath") }}{{ end }}
{{- if $v.plugin.enabled }}{{ $mounts = append $mounts (dict "path" $v.plugin.mountPath "from" "plugin.mountPath") }}{{ end }}
{{- if $v.execHandler.enabled }}{{ $mounts = append $mounts (dict "path" $v.execHandler.mountPath "from" "execHandler.mountPath") }}{{ end }}
{{- range $i, $m := $v.extraVolumeMounts }}{{ $mounts = append $mounts (dict "path" $m.mountPath "from" (printf "extraVolumeMounts[%d]" $i)) }}{{ end }}
{{- $seen := dict }}
{{- range $mounts }}
{{- $p := toString .path }}
{{- $key := ternary $p (trimSuffix "/" $p) (eq $p "/") }}
{{- if hasKey $seen $key }}
{{- $msgs = append $msgs (printf "%s (%s) is also the mount path of %s: the API server refuses two volume mounts at one path; move one." .from $p (get $seen $key)) }}
{{- else }}{{ $_ := set $seen $key .from }}{{ end }}
{{- end }}

{{- /* Credentials: each auth mode needs its pieces, and pieces of another mode are refused
       rather than silently ignored. */}}
{{- with $v.kafkaAuth }}
{{- $proto := toString .securityProtocol }}
{{- $mech := toString .saslMechanism }}
{{- $sasl := hasPrefix "SASL_" $proto }}
{{- $tls := has $proto (list "SSL" "SASL_SSL") }}
{{- $userPass := has $mech (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512") }}
{{- if and $mech (not $sasl) }}
{{- $msgs = append $msgs "kafkaAuth.saslMechanism is set but kafkaAuth.securityProtocol is not SASL_PLAINTEXT or SASL_SSL." }}
{{- end }}
{{- if and $sasl (not $mech) }}
{{- $msgs = append $msgs "kafkaAuth.securityProtocol is SASL_* but kafkaAuth.saslMechanism is empty." }}
{{- end }}
{{- if and $userPass (not .existingSecret) }}
{{- $msgs = append $msgs (printf "kafkaAuth.saslMechanism is %s but kafkaAuth.existingSecret (username/password Secret) is empty." $mech) }}
{{- end }}
{{- if and (or .existingSecret .username) (not $userPass) }}
{{- $msgs = append $msgs "kafkaAuth.existingSecret/username are set but kafkaAuth.saslMechanism is not PLAIN or SCRAM-*: the credentials would be ignored." }}
{{- end }}
{{- if eq $mech "OAUTHBEARER" }}
{{- if not (regexMatch "^https?://[^\\s]+$" (toString .oauthbearer.tokenEndpointUrl)) }}
{{- $msgs = append $msgs "kafkaAuth.saslMechanism is OAUTHBEARER but kafkaAuth.oauthbearer.tokenEndpointUrl is not an http(s) URL (the OIDC token endpoint)." }}
{{- end }}
{{- if not .oauthbearer.existingSecret }}
{{- $msgs = append $msgs "kafkaAuth.saslMechanism is OAUTHBEARER but kafkaAuth.oauthbearer.existingSecret (client id/secret Secret) is empty." }}
{{- end }}
{{- else if or .oauthbearer.existingSecret .oauthbearer.tokenEndpointUrl }}
{{- $msgs = append $msgs "kafkaAuth.oauthbearer is set but kafkaAuth.saslMechanism is not OAUTHBEARER: it would be ignored." }}
{{- end }}
{{- if eq $mech "GSSAPI" }}
{{- if not (regexMatch "^[^@\\s]+@[^@\\s]+$" (toString .gssapi.principal)) }}
{{- $msgs = append $msgs "kafkaAuth.saslMechanism is GSSAPI but kafkaAuth.gssapi.principal is not name@REALM." }}
{{- end }}
{{- if not .gssapi.keytabSecret }}
{{- $msgs = append $msgs "kafkaAuth.saslMechanism is GSSAPI but kafkaAuth.gssapi.keytabSecret is empty." }}
{{- end }}
{{- if not .gssapi.krb5ConfigMap }}
{{- $msgs = append $msgs "kafkaAuth.saslMechanism is GSSAPI but kafkaAuth.gssapi.krb5ConfigMap (krb5.conf) is empty." }}
{{- end }}
{{- else if or .gssapi.principal .gssapi.keytabSecret .gssapi.krb5ConfigMap }}
{{- $msgs = append $msgs "kafkaAuth.gssapi is set but kafkaAuth.saslMechanism is not GSSAPI: it would be ignored." }}
{{- end }}
{{- if and .ca.existingSecret (not $tls) }}
{{- $msgs = append $msgs "kafkaAuth.ca.existingSecret is set but kafkaAuth.securityProtocol is not SSL or SASL_SSL." }}
{{- end }}
{{- if and .clientCert.existingSecret (not $tls) }}
{{- $msgs = append $msgs "kafkaAuth.clientCert.existingSecret (mTLS) is set but kafkaAuth.securityProtocol is not SSL or SASL_SSL." }}
{{- end }}
{{- end }}
{{- /* KEDA reads the lag from Kafka itself and gets credentials only from kafkaAuth (keda.yaml):
       auth set up elsewhere would leave its triggers without it, unless the user names their
       own TriggerAuthentication. */}}
{{- $kedaRef := $v.autoscaling.keda.authenticationRef.name }}
{{- $kafkaAuthSet := or $v.kafkaAuth.securityProtocol $v.kafkaAuth.saslMechanism $v.kafkaAuth.ca.existingSecret $v.kafkaAuth.clientCert.existingSecret }}
{{- if and $v.autoscaling.keda.enabled $kedaRef $kafkaAuthSet }}
{{- $msgs = append $msgs "autoscaling.keda.authenticationRef.name and kafkaAuth are both set: the chart already hands kafkaAuth's Secrets to KEDA; clear one." }}
{{- else if and $v.autoscaling.keda.enabled (not $kedaRef) (not $kafkaAuthSet) }}
{{- $outside := list }}
{{- range $c.kafka.properties }}
{{- $kv := splitn "=" 2 (toString .) }}
{{- $prop := lower (trim $kv._0) }}
{{- if or (regexMatch "^(sasl|ssl)\\." $prop) (and (eq $prop "security.protocol") (ne (upper (trim (toString $kv._1))) "PLAINTEXT")) }}
{{- $outside = append $outside (printf "config.kafka.properties %s" $prop) }}
{{- end }}
{{- end }}
{{- range $v.extraEnv }}
{{- if regexMatch "^KJOBS_RDKAFKA_(SECURITY_PROTOCOL|SASL_|SSL_)" (toString .name) }}
{{- $outside = append $outside (printf "extraEnv %s" .name) }}
{{- end }}
{{- end }}
{{- if $outside }}
{{- $msgs = append $msgs (printf "autoscaling.keda.enabled with Kafka auth set outside kafkaAuth (%s): KEDA's ScaledObject would read the lag without it. Configure the auth through kafkaAuth (the chart hands its Secrets to KEDA too), or set autoscaling.keda.authenticationRef.name to your own TriggerAuthentication." (join ", " $outside)) }}
{{- end }}
{{- end }}

{{- range $c.kafka.properties }}
{{- $prop := trim (regexFind "^[^=]+" (toString .)) }}
{{- if include "kjobs.sensitiveProperty" $prop }}
{{- $msgs = append $msgs (printf "config.kafka.properties sets %s in plain text in a ConfigMap: put credentials in a Secret (kafkaAuth, or extraEnv valueFrom/extraEnvVarsSecret as KJOBS_RDKAFKA_*)." $prop) }}
{{- end }}
{{- end }}

{{- range $c.kafka.properties }}
{{- $prop := regexFind "^[^=]+" (toString .) }}
{{- if has $prop (list "bootstrap.servers" "group.id" "client.id" "group.instance.id" "enable.auto.commit" "enable.auto.offset.store") }}
{{- $msgs = append $msgs (printf "config.kafka.properties sets %s, which kjobs owns: use the matching config.kafka setting instead." $prop) }}
{{- end }}
{{- end }}

{{- /* extraEnv comes after the chart's env: a name the chart sets would silently win over it
       (the kafkaAuth env), and a KJOBS_<GROUP>_<NAME> replaces the kjobs.cfg setting the chart
       renders from config.* (every setting of the file: the names are read off kjobs.config, so
       the list follows _config.tpl). A secret librdkafka property must come from a Secret. */}}
{{- $chartEnv := dict }}
{{- range (include "kjobs.kafkaAuthEnv" .) | fromYamlArray }}{{ $_ := set $chartEnv .name "kafkaAuth" }}{{ end }}
{{- $group := "" }}
{{- range splitList "\n" (include "kjobs.config" .) }}
{{- if regexMatch "^[a-z_]+ = \\{" . }}{{ $group = regexFind "^[a-z_]+" . }}
{{- else if regexMatch "^\\};" . }}{{ $group = "" }}
{{- else if and $group (regexMatch "^  [a-z_]+ = " .) }}{{ $k := trim (regexFind "^  [a-z_]+" .) }}{{ $_ := set $chartEnv (upper (printf "KJOBS_%s_%s" $group $k)) (printf "config.%s.%s" $group $k) }}
{{- else if regexMatch "^[a-z_]+ = " . }}{{ $k := regexFind "^[a-z_]+" . }}{{ $_ := set $chartEnv (upper (printf "KJOBS_%s" $k)) (printf "config.%s" $k) }}
{{- end }}
{{- end }}
{{- /* Secret settings (kjobs.configSecretEnv): config.<group>.<name> is a Secret reference, never
       the value. Any config value the file does not render is one; a literal there is refused,
       and so is a literal KJOBS_<GROUP>_<NAME> of one in extraEnv. */}}
{{- $secretEnv := dict }}
{{- range $g := keys $c | sortAlpha }}
{{- $grp := get $c $g }}
{{- if kindIs "map" $grp }}
{{- range $n := keys $grp | sortAlpha }}
{{- $name := upper (printf "KJOBS_%s_%s" $g $n) }}
{{- $s := get $grp $n }}
{{- if not (hasKey $chartEnv $name) }}
{{- $_ := set $secretEnv $name (printf "config.%s.%s" $g $n) }}
{{- if and (kindIs "map" $s) $s.existingSecret }}{{ $_ := set $chartEnv $name (printf "config.%s.%s" $g $n) }}{{ end }}
{{- if and (kindIs "string" $s) $s }}
{{- $msgs = append $msgs (printf "config.%s.%s is a secret setting: it is never written to the ConfigMap. Give the Secret that holds it instead: config.%s.%s.existingSecret=<Secret> and config.%s.%s.key=<key> (the pods get %s from it)." $g $n $g $n $g $n $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $v.extraEnv }}
{{- $name := toString .name }}
{{- if hasKey $chartEnv $name }}
{{- $msgs = append $msgs (printf "extraEnv sets %s, which the chart sets (from %s): it would silently override it; set %s instead." $name (get $chartEnv $name) (get $chartEnv $name)) }}
{{- end }}
{{- if and (hasKey $secretEnv $name) (not (hasKey $chartEnv $name)) (hasKey . "value") }}
{{- $msgs = append $msgs (printf "extraEnv %s has a literal value for the secret setting %s: set %s.existingSecret/key (or use valueFrom.secretKeyRef, or extraEnvVarsSecret)." $name (trimPrefix "config." (get $secretEnv $name)) (get $secretEnv $name)) }}
{{- end }}
{{- if and (hasPrefix "KJOBS_RDKAFKA_" $name) (hasKey . "value") }}
{{- $prop := trimPrefix "KJOBS_RDKAFKA_" $name | lower | replace "_" "." }}
{{- if include "kjobs.sensitiveProperty" $prop }}
{{- $msgs = append $msgs (printf "extraEnv %s has a literal value for librdkafka's %s, a secret: use valueFrom.secretKeyRef (or extraEnvVarsSecret)." $name $prop) }}
{{- end }}
{{- end }}
{{- end }}

{{- /* Handlers. */}}
{{- if $v.plugin.enabled }}
{{- if not $v.plugin.image.repository }}
{{- $msgs = append $msgs "plugin.enabled needs plugin.image.repository." }}
{{- end }}
{{- if not (hasPrefix "/" (toString $v.plugin.path)) }}
{{- $msgs = append $msgs "plugin.enabled needs plugin.path, the absolute path of the .so inside the plugin image." }}
{{- end }}
{{- if $c.handlers.plugin }}
{{- $msgs = append $msgs "plugin.enabled and config.handlers.plugin are both set: plugin.enabled sets handlers.plugin; clear one." }}
{{- end }}
{{- end }}
{{- if $v.execHandler.enabled }}
{{- if not $v.execHandler.image.repository }}
{{- $msgs = append $msgs "execHandler.enabled needs execHandler.image.repository." }}
{{- end }}
{{- if not $v.execHandler.command }}
{{- $msgs = append $msgs "execHandler.enabled needs execHandler.command (the handler's argv, e.g. [\"/opt/kjobs/exec/bin/handler\"])." }}
{{- end }}
{{- if $c.handlers.exec }}
{{- $msgs = append $msgs "execHandler.enabled and config.handlers.exec are both set: execHandler.command sets handlers.exec; clear one." }}
{{- end }}
{{- end }}
{{- if and $c.handlers.exec_types (not (or $c.handlers.exec $v.execHandler.enabled)) }}
{{- $msgs = append $msgs "config.handlers.exec_types is set but no exec handler is configured (config.handlers.exec or execHandler)." }}
{{- end }}

{{- /* Monitoring through the chart's Service: without it there is nothing to scrape or match. */}}
{{- if not $v.service.enabled }}
{{- if $v.serviceMonitor.enabled }}
{{- $msgs = append $msgs "serviceMonitor.enabled needs service.enabled: the ServiceMonitor scrapes the workers through the chart's Service and would select nothing. Enable the Service, or scrape the pods another way (e.g. a PodMonitor) and set serviceMonitor.enabled=false." }}
{{- end }}
{{- if $v.prometheusRule.enabled }}
{{- $msgs = append $msgs "prometheusRule.enabled needs service.enabled: its alerts select this release's series by the service label of the chart's Service (as a ServiceMonitor scrapes it); without the Service no alert sees a series and KjobsAbsent fires for good. Enable the Service, or write your own rules from docs/operations.md and set prometheusRule.enabled=false." }}
{{- end }}
{{- end }}

{{- /* Schema Registry: the pairs kjobs itself refuses at start-up, refused here before a rollout. */}}
{{- with $c.kafka }}
{{- if and (kindIs "map" .schema_registry_password) .schema_registry_password.existingSecret (not .schema_registry_user) }}
{{- $msgs = append $msgs "config.kafka.schema_registry_password.existingSecret is set but config.kafka.schema_registry_user is empty: basic auth needs both." }}
{{- end }}
{{- if and .schema_registry_key_file (not .schema_registry_cert_file) }}
{{- $msgs = append $msgs "config.kafka.schema_registry_key_file is set but config.kafka.schema_registry_cert_file is empty." }}
{{- end }}
{{- end }}

{{- /* Static membership needs stable identities; a Deployment's pods share one config. */}}
{{- if $c.kafka.group_instance_id }}
{{- $msgs = append $msgs "config.kafka.group_instance_id is set: every pod of this Deployment would claim the same static member id and fence the others. Leave it empty (static membership needs stable pod names, i.e. a StatefulSet)." }}
{{- end }}

{{- if $msgs }}
{{- fail (printf "\n\nkjobs chart: invalid values:\n  - %s\n" (join "\n  - " $msgs)) }}
{{- end }}
{{- end }}

{{/*
Container resources with empty entries dropped (an empty limit means "no limit").
*/}}
{{- define "kjobs.resources" -}}
{{- include "kjobs.resourcesOf" .Values.resources }}
{{- end }}

{{/* A resources map with the empty ("") requests and limits left out: the console's. */}}
{{- define "kjobs.resourcesOf" -}}
{{- $res := . }}
{{- $out := dict }}
{{- range $kind := list "requests" "limits" }}
{{- $m := dict }}
{{- range $k, $val := (get $res $kind) }}
{{- if not (eq (toString $val) "") }}{{ $_ := set $m $k $val }}{{ end }}
{{- end }}
{{- if $m }}{{ $_ := set $out $kind $m }}{{ end }}
{{- end }}
{{- toYaml $out }}
{{- end }}
