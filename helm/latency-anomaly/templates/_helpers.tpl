{{/*
Shared names, labels and values derived from several settings. Component templates take a dict
`(dict "ctx" $ "component" "checker")` so one helper serves checker, ingester and recomputer.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "latency-anomaly.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: fullnameOverride, or release name + chart name (the release name alone when it
already contains the chart name). Truncated so that "-<component>" still fits in 63 characters.
*/}}
{{- define "latency-anomaly.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "latency-anomaly.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "latency-anomaly.labels" -}}
helm.sh/chart: {{ include "latency-anomaly.chart" . }}
{{ include "latency-anomaly.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: latency-anomaly
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the release's pods. */}}
{{- define "latency-anomaly.selectorLabels" -}}
app.kubernetes.io/name: {{ include "latency-anomaly.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of one component's resources: <fullname>-<component>. Takes (dict "ctx" $ "component" NAME). */}}
{{- define "latency-anomaly.componentFullname" -}}
{{- printf "%s-%s" (include "latency-anomaly.fullname" .ctx) .component }}
{{- end }}

{{/* Labels of one component's resources. Takes (dict "ctx" $ "component" NAME). */}}
{{- define "latency-anomaly.componentLabels" -}}
{{ include "latency-anomaly.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels that select one component's pods. Takes (dict "ctx" $ "component" NAME). */}}
{{- define "latency-anomaly.componentSelectorLabels" -}}
{{ include "latency-anomaly.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The ServiceAccount the components run as. */}}
{{- define "latency-anomaly.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "latency-anomaly.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from an image block. Takes (dict "image" BLOCK "defaultTag" TAG). */}}
{{- define "latency-anomaly.imageRef" -}}
{{- $repo := .image.repository }}
{{- if .image.registry }}
{{- $repo = printf "%s/%s" (trimSuffix "/" .image.registry) .image.repository }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (toString (default .defaultTag .image.tag)) }}
{{- end }}
{{- end }}

{{/* The latency-anomaly image. */}}
{{- define "latency-anomaly.image" -}}
{{- include "latency-anomaly.imageRef" (dict "image" .Values.image "defaultTag" .Chart.AppVersion) }}
{{- end }}

{{/* Name of the bundled Redis resources. */}}
{{- define "latency-anomaly.redisFullname" -}}
{{- include "latency-anomaly.componentFullname" (dict "ctx" . "component" "redis") }}
{{- end }}

{{/* How the components reach Redis: `standalone` with the bundled Redis, else externalRedis.mode. */}}
{{- define "latency-anomaly.redisMode" -}}
{{- if .Values.redis.enabled }}standalone{{ else }}{{ .Values.externalRedis.mode }}{{ end }}
{{- end }}

{{/* The Redis URL of mode standalone: the bundled Redis Service, or externalRedis.url. */}}
{{- define "latency-anomaly.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s:6379" (include "latency-anomaly.redisFullname" .) }}
{{- else }}
{{- .Values.externalRedis.url }}
{{- end }}
{{- end }}

{{/*
The TCP port of a URL: the explicit port, else the scheme's default (http 80, https 443,
redis/rediss 6379). A value without "://" is read as host:port.
*/}}
{{- define "latency-anomaly.urlPort" -}}
{{- $url := . }}
{{- $scheme := "" }}
{{- $rest := $url }}
{{- if contains "://" $url }}
{{- $parts := splitn "://" 2 $url }}
{{- $scheme = lower $parts._0 }}
{{- $rest = $parts._1 }}
{{- end }}
{{- $hostport := regexReplaceAll "[/?#].*$" $rest "" }}
{{- $hostport = regexReplaceAll "^.*@" $hostport "" }}
{{- $port := regexFind ":[0-9]+$" $hostport | trimPrefix ":" }}
{{- if $port }}
{{- $port }}
{{- else if eq $scheme "https" }}
{{- "443" }}
{{- else if or (eq $scheme "redis") (eq $scheme "rediss") }}
{{- "6379" }}
{{- else }}
{{- "80" }}
{{- end }}
{{- end }}

{{/*
The TCP ports the components reach an external Redis on, as a JSON list of numbers: the port of
externalRedis.url; or the sentinels' ports and sentinel.dataPorts (the primary and replicas they
name); or the seeds' ports and cluster.nodePorts (every node the cluster announces). Never a
cluster bus port: clients do not use it.
*/}}
{{- define "latency-anomaly.redisEgressPorts" -}}
{{- $r := .Values.externalRedis }}
{{- $mode := include "latency-anomaly.redisMode" . }}
{{- $ports := list }}
{{- if eq $mode "sentinel" }}
{{- range $r.sentinel.urls }}
{{- $ports = append $ports (int (include "latency-anomaly.urlPort" .)) }}
{{- end }}
{{- range $r.sentinel.dataPorts }}
{{- $ports = append $ports (int .) }}
{{- end }}
{{- else if eq $mode "cluster" }}
{{- range $r.cluster.urls }}
{{- $ports = append $ports (int (include "latency-anomaly.urlPort" .)) }}
{{- end }}
{{- range $r.cluster.nodePorts }}
{{- $ports = append $ports (int .) }}
{{- end }}
{{- else }}
{{- $ports = append $ports (int (include "latency-anomaly.urlPort" $r.url)) }}
{{- end }}
{{- toJson (uniq $ports) }}
{{- end }}

{{/* Whether the components mount TLS files for an external Redis; prints "true" or nothing. */}}
{{- define "latency-anomaly.redisTls" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.tls.existingSecret }}true{{ end }}
{{- end }}

{{/* Where the Redis TLS files are mounted. */}}
{{- define "latency-anomaly.redisTlsDir" -}}
/var/run/secrets/latency-anomaly/redis-tls
{{- end }}

{{/* The Redis TLS files as (config key, Secret key, file name) triples, as JSON; only those set. */}}
{{- define "latency-anomaly.redisTlsFiles" -}}
{{- $t := .Values.externalRedis.tls }}
{{- $files := list }}
{{- if $t.caKey }}
{{- $files = append $files (list "tls_ca_file" $t.caKey "ca.crt") }}
{{- end }}
{{- if $t.certKey }}
{{- $files = append $files (list "tls_cert_file" $t.certKey "tls.crt") }}
{{- $files = append $files (list "tls_key_file" $t.keyKey "tls.key") }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/* Whether the ingester serves OTLP/gRPC on a port of its own; prints "true" or nothing. */}}
{{- define "latency-anomaly.otlpGrpc" -}}
{{- if .Values.ingester.otlp.grpc.enabled }}true{{ end }}
{{- end }}

{{/* Name of the Secret the chart creates from values. */}}
{{- define "latency-anomaly.secretName" -}}
{{- include "latency-anomaly.fullname" . }}
{{- end }}

{{/* Secret holding the Redis password. */}}
{{- define "latency-anomaly.redisAuthSecretName" -}}
{{- default (include "latency-anomaly.secretName" .) .Values.redisAuth.existingSecret }}
{{- end }}

{{/* Whether the components send a password to the sentinels; prints "true" or nothing. */}}
{{- define "latency-anomaly.sentinelAuth" -}}
{{- if and (eq (include "latency-anomaly.redisMode" .) "sentinel") .Values.externalRedis.sentinel.auth.enabled }}true{{ end }}
{{- end }}

{{/* Secret holding the sentinels' password. */}}
{{- define "latency-anomaly.sentinelAuthSecretName" -}}
{{- default (include "latency-anomaly.secretName" .) .Values.externalRedis.sentinel.auth.existingSecret }}
{{- end }}

{{/* Secret holding the Tempo credentials. */}}
{{- define "latency-anomaly.tempoAuthSecretName" -}}
{{- default (include "latency-anomaly.secretName" .) .Values.tempoAuth.existingSecret }}
{{- end }}

{{/* Secret holding one component's API token file. Takes (dict "ctx" $ "component" NAME). */}}
{{- define "latency-anomaly.apiAuthSecretName" -}}
{{- $auth := index .ctx.Values.apiAuth .component }}
{{- default (include "latency-anomaly.secretName" .ctx) $auth.existingSecret }}
{{- end }}

{{/* Whether a component serves a token-protected API. Takes (dict "ctx" $ "component" NAME); prints "true" or nothing. */}}
{{- define "latency-anomaly.apiAuthEnabled" -}}
{{- $auth := index .ctx.Values.apiAuth .component | default dict }}
{{- if $auth.enabled }}true{{ end }}
{{- end }}

{{/* Where a component's token file is mounted. Takes the component name. */}}
{{- define "latency-anomaly.tokensDir" -}}
{{- printf "/var/run/secrets/latency-anomaly/%s" . }}
{{- end }}

{{/*
The key/value pairs of the Secret the chart creates, as JSON (values not yet encoded; JSON keeps
every value a string). Empty when every secret comes from an existing Secret or is off.
*/}}
{{- define "latency-anomaly.secretData" -}}
{{- $data := dict }}
{{- if and .Values.redisAuth.enabled (not .Values.redisAuth.existingSecret) }}
{{- $_ := set $data .Values.redisAuth.existingSecretKey .Values.redisAuth.password }}
{{- end }}
{{- $sentinel := .Values.externalRedis.sentinel.auth }}
{{- if and (include "latency-anomaly.sentinelAuth" .) (not $sentinel.existingSecret) }}
{{- $_ := set $data $sentinel.existingSecretKey $sentinel.password }}
{{- end }}
{{- $tempo := .Values.tempoAuth }}
{{- if and (ne $tempo.type "none") (not $tempo.existingSecret) }}
{{- if eq $tempo.type "basic" }}
{{- $_ := set $data $tempo.existingSecretKeys.username $tempo.username }}
{{- $_ := set $data $tempo.existingSecretKeys.password $tempo.password }}
{{- else }}
{{- $_ := set $data $tempo.existingSecretKeys.token $tempo.token }}
{{- end }}
{{- end }}
{{- range $component := list "checker" "ingester" }}
{{- $auth := index $.Values.apiAuth $component }}
{{- if and $auth.enabled (not $auth.existingSecret) }}
{{- $_ := set $data $auth.existingSecretKey (printf "%s\n" (join "\n" $auth.tokens)) }}
{{- end }}
{{- end }}
{{- if $data }}
{{- toJson $data }}
{{- end }}
{{- end }}

{{/*
The shared config file, as YAML: `config` as given, plus what the chart decides (where Redis is:
the mode with the URL, the sentinels or the seeds; the listen addresses from the ports, the token
file paths), then `extraConfig` over it. Secrets never appear here. Every pod reads this one
file: the checker's trace analysis takes its Tempo (URL, tenant, timeout, retries) from
`ingester.tempo` too.
*/}}
{{- define "latency-anomaly.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $r := .Values.externalRedis }}
{{- $mode := include "latency-anomaly.redisMode" . }}
{{- $_ := set $cfg.redis "mode" $mode }}
{{- if eq $mode "sentinel" }}
{{- $sentinel := dict "master_name" $r.sentinel.masterName "urls" $r.sentinel.urls "tls" $r.sentinel.tls "db" (int $r.sentinel.db) }}
{{- if and $r.sentinel.auth.enabled $r.sentinel.auth.username }}
{{- $_ := set $sentinel "username" $r.sentinel.auth.username }}
{{- end }}
{{- $_ := set $cfg.redis "sentinel" $sentinel }}
{{- else if eq $mode "cluster" }}
{{- $_ := set $cfg.redis "cluster" (dict "urls" $r.cluster.urls) }}
{{- else }}
{{- $_ := set $cfg.redis "url" (include "latency-anomaly.redisUrl" .) }}
{{- end }}
{{- if and (not .Values.redis.enabled) .Values.redisAuth.enabled .Values.redisAuth.username }}
{{- $_ := set $cfg.redis "username" .Values.redisAuth.username }}
{{- end }}
{{- if include "latency-anomaly.redisTls" . }}
{{- range include "latency-anomaly.redisTlsFiles" . | fromJsonArray }}
{{- $_ := set $cfg.redis (index . 0) (printf "%s/%s" (include "latency-anomaly.redisTlsDir" $) (index . 2)) }}
{{- end }}
{{- end }}
{{- /* An empty tenant is the binaries' default; leaving it out keeps the file minimal. */}}
{{- if not $cfg.ingester.tempo.org_id }}
{{- $_ := unset $cfg.ingester.tempo "org_id" }}
{{- end }}
{{- /* config.checker holds only what the chart does not decide (analysis); listen and auth come below. */}}
{{- if not (kindIs "map" $cfg.checker) }}
{{- $_ := set $cfg "checker" (dict) }}
{{- end }}
{{- range $component := list "checker" "ingester" "recomputer" }}
{{- $section := index $cfg $component }}
{{- $_ := set $section "listen" (printf "0.0.0.0:%d" (int (index $.Values $component).port)) }}
{{- if include "latency-anomaly.apiAuthEnabled" (dict "ctx" $ "component" $component) }}
{{- $_ := set $section "auth" (dict "tokens_file" (printf "%s/tokens" (include "latency-anomaly.tokensDir" $component))) }}
{{- end }}
{{- end }}
{{- /* OTLP/HTTP shares ingester.listen; OTLP/gRPC follows its container port, or is off (""). */}}
{{- $grpc := "" }}
{{- if include "latency-anomaly.otlpGrpc" . }}
{{- $grpc = printf "0.0.0.0:%d" (int .Values.ingester.otlp.grpc.port) }}
{{- end }}
{{- $_ := set $cfg.ingester.otlp "grpc_listen" $grpc }}
{{- $cfg = mergeOverwrite $cfg (deepCopy .Values.extraConfig) }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Checks of settings the schema cannot express; each failure names the value to fix. Rendered once,
from configmap.yaml.
*/}}
{{- define "latency-anomaly.validate" -}}
{{- $r := .Values.externalRedis }}
{{- if and .Values.redis.enabled (ne $r.mode "standalone") }}
{{- fail (printf "latency-anomaly: externalRedis.mode=%s needs redis.enabled=false: the bundled Redis is a single node, for mode standalone only" $r.mode) }}
{{- end }}
{{- if and .Values.redis.enabled (gt (int .Values.config.redis.min_replicas_ack) 0) }}
{{- fail "latency-anomaly: config.redis.min_replicas_ack needs replicas, which the bundled Redis (redis.enabled=true) has none of: every ingest would answer 503; set it to 0 or use an external Redis with replicas" }}
{{- end }}
{{- if and (ne $r.mode "standalone") $r.url }}
{{- fail (printf "latency-anomaly: externalRedis.url is for mode standalone; mode %s reaches Redis through externalRedis.%s.urls" $r.mode $r.mode) }}
{{- end }}
{{- if and (not .Values.redis.enabled) (eq $r.mode "standalone") (not $r.url) }}
{{- fail "latency-anomaly: set externalRedis.url (redis://host:6379) or redis.enabled=true" }}
{{- end }}
{{- if and .Values.redis.enabled $r.url }}
{{- fail "latency-anomaly: externalRedis.url is set while redis.enabled=true; set redis.enabled=false to use the external Redis" }}
{{- end }}
{{- if eq $r.mode "cluster" }}
{{- $schemes := list }}
{{- range $r.cluster.urls }}
{{- $schemes = append $schemes (regexFind "^rediss?://" .) }}
{{- end }}
{{- if gt (len (uniq $schemes)) 1 }}
{{- fail "latency-anomaly: externalRedis.cluster.urls mix redis:// and rediss://; a cluster's nodes are all TLS or none" }}
{{- end }}
{{- end }}
{{- with .Values.config.redis }}
{{- if and (gt (int .min_replicas_ack) 0) (regexMatch "^\\s*(0+\\s*[a-zA-Zµ]+\\s*)+$" (toString .min_replicas_ack_timeout)) }}
{{- fail "latency-anomaly: config.redis.min_replicas_ack_timeout must be more than 0 when config.redis.min_replicas_ack is set" }}
{{- end }}
{{- end }}
{{- with $r.sentinel.auth }}
{{- if and (eq $r.mode "sentinel") .enabled (not .existingSecret) (not .password) }}
{{- fail "latency-anomaly: externalRedis.sentinel.auth.enabled needs externalRedis.sentinel.auth.existingSecret or externalRedis.sentinel.auth.password" }}
{{- end }}
{{- end }}
{{- if and .Values.externalRedis.url (not (regexMatch "^rediss?://" .Values.externalRedis.url)) }}
{{- fail "latency-anomaly: externalRedis.url must start with redis:// or rediss://" }}
{{- end }}
{{- if regexMatch "^rediss?://[^/@]*:[^/@]*@" .Values.externalRedis.url }}
{{- fail "latency-anomaly: externalRedis.url must not hold a password (it would land in the ConfigMap); use redisAuth" }}
{{- end }}
{{- with .Values.externalRedis.tls }}
{{- if and .existingSecret (not $.Values.redis.enabled) }}
{{- /* The binaries refuse TLS files without TLS to the data nodes, but only once the pods start. */}}
{{- if and (eq $r.mode "standalone") (not (hasPrefix "rediss://" $r.url)) }}
{{- fail "latency-anomaly: externalRedis.tls.existingSecret needs a rediss:// externalRedis.url" }}
{{- end }}
{{- if and (eq $r.mode "sentinel") (not $r.sentinel.tls) }}
{{- fail "latency-anomaly: externalRedis.tls.existingSecret in mode sentinel needs externalRedis.sentinel.tls=true (TLS to the primary the sentinels name)" }}
{{- end }}
{{- if and (eq $r.mode "cluster") (not (hasPrefix "rediss://" (first $r.cluster.urls | default ""))) }}
{{- fail "latency-anomaly: externalRedis.tls.existingSecret in mode cluster needs rediss:// externalRedis.cluster.urls" }}
{{- end }}
{{- if ne (empty .certKey) (empty .keyKey) }}
{{- fail "latency-anomaly: externalRedis.tls.certKey and externalRedis.tls.keyKey go together" }}
{{- end }}
{{- if and (not .caKey) (not .certKey) }}
{{- fail "latency-anomaly: externalRedis.tls.existingSecret needs caKey, certKey or both" }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.redisAuth }}
{{- if and .enabled (not .existingSecret) (not .password) }}
{{- fail "latency-anomaly: redisAuth.enabled needs redisAuth.existingSecret or redisAuth.password" }}
{{- end }}
{{- end }}
{{- with .Values.tempoAuth }}
{{- if and (eq .type "basic") (not .existingSecret) (or (not .username) (not .password)) }}
{{- fail "latency-anomaly: tempoAuth.type=basic needs tempoAuth.existingSecret, or tempoAuth.username and tempoAuth.password" }}
{{- end }}
{{- if and (eq .type "bearer") (not .existingSecret) (not .token) }}
{{- fail "latency-anomaly: tempoAuth.type=bearer needs tempoAuth.existingSecret or tempoAuth.token" }}
{{- end }}
{{- end }}
{{- range $component := list "checker" "ingester" }}
{{- $auth := index $.Values.apiAuth $component }}
{{- if and $auth.enabled (not $auth.existingSecret) }}
{{- if not $auth.tokens }}
{{- fail (printf "latency-anomaly: apiAuth.%s.enabled needs apiAuth.%s.existingSecret or apiAuth.%s.tokens" $component $component $component) }}
{{- end }}
{{- range $auth.tokens }}
{{- if not (regexMatch "^[!-~]+$" (toString .)) }}
{{- fail (printf "latency-anomaly: apiAuth.%s.tokens must be non-empty printable ASCII without spaces" $component) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- /* The chart-created Secret holds every value-sourced secret; two of them must not share a key. */}}
{{- $keys := list }}
{{- if and .Values.redisAuth.enabled (not .Values.redisAuth.existingSecret) }}
{{- $keys = append $keys .Values.redisAuth.existingSecretKey }}
{{- end }}
{{- if and (include "latency-anomaly.sentinelAuth" .) (not $r.sentinel.auth.existingSecret) }}
{{- $keys = append $keys $r.sentinel.auth.existingSecretKey }}
{{- end }}
{{- if and (ne .Values.tempoAuth.type "none") (not .Values.tempoAuth.existingSecret) }}
{{- if eq .Values.tempoAuth.type "basic" }}
{{- $keys = append $keys .Values.tempoAuth.existingSecretKeys.username }}
{{- $keys = append $keys .Values.tempoAuth.existingSecretKeys.password }}
{{- else }}
{{- $keys = append $keys .Values.tempoAuth.existingSecretKeys.token }}
{{- end }}
{{- end }}
{{- range $component := list "checker" "ingester" }}
{{- $auth := index $.Values.apiAuth $component }}
{{- if and $auth.enabled (not $auth.existingSecret) }}
{{- $keys = append $keys $auth.existingSecretKey }}
{{- end }}
{{- end }}
{{- if ne (len $keys) (len (uniq $keys)) }}
{{- fail (printf "latency-anomaly: the Secret created from values would hold the same key twice (%s); give each secret its own existingSecretKey" (join ", " $keys)) }}
{{- end }}
{{- with .Values.ingester }}
{{- if and .otlp.grpc.enabled (eq (int .otlp.grpc.port) (int .port)) }}
{{- fail "latency-anomaly: ingester.otlp.grpc.port must differ from ingester.port (OTLP/HTTP already shares that one)" }}
{{- end }}
{{- $ports := list (int .service.port) }}
{{- if not (kindIs "invalid" .service.otlpHttpPort) }}
{{- $ports = append $ports (int .service.otlpHttpPort) }}
{{- end }}
{{- if .otlp.grpc.enabled }}
{{- $ports = append $ports (int .service.otlpGrpcPort) }}
{{- end }}
{{- if ne (len $ports) (len (uniq $ports)) }}
{{- fail (printf "latency-anomaly: ingester.service.port, otlpHttpPort and otlpGrpcPort must differ (%s)" (join ", " $ports)) }}
{{- end }}
{{- end }}
{{- if gt (int .Values.config.stats.min_samples) (int .Values.config.stats.window_size) }}
{{- fail "latency-anomaly: config.stats.min_samples must not exceed config.stats.window_size" }}
{{- end }}
{{- /* The binaries refuse these too, but only once the pods start. */}}
{{- $levels := list }}
{{- range $i, $step := .Values.config.stats.fallback }}
{{- if has $step.level $levels }}
{{- fail (printf "latency-anomaly: config.stats.fallback[%d].level: %s is listed twice" $i $step.level) }}
{{- end }}
{{- $levels = append $levels $step.level }}
{{- end }}
{{- range $i, $o := .Values.config.overrides }}
{{- if and (hasKey $o "min_samples") (gt (int $o.min_samples) (int $.Values.config.stats.window_size)) }}
{{- fail (printf "latency-anomaly: config.overrides[%d].min_samples must not exceed config.stats.window_size" $i) }}
{{- end }}
{{- end }}
{{- range $component := list "checker" "ingester" "recomputer" }}
{{- $a := (index $.Values $component).autoscaling }}
{{- if $a.enabled }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "latency-anomaly: %s.autoscaling.minReplicas is greater than maxReplicas" $component) }}
{{- end }}
{{- if and (not $a.targetCPUUtilizationPercentage) (not $a.targetMemoryUtilizationPercentage) }}
{{- fail (printf "latency-anomaly: %s.autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" $component) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
