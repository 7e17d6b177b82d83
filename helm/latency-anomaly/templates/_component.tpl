{{/*
The resources that checker, ingester and recomputer share in shape: Deployment, Service, HPA,
PodDisruptionBudget and NetworkPolicy. Each takes (dict "ctx" $ "component" NAME) and reads the
values under .Values.<NAME>; the files in templates/<NAME>/ call them. Component differences
(Tempo credentials for the ingester's poller and the checker's trace analysis, API token files
for checker and ingester) are keyed on the
component name here, so the three Deployments cannot drift apart.
*/}}

{{/* Environment variables of a component's container, as a YAML list (possibly empty). */}}
{{- define "latency-anomaly.component.env" -}}
{{- $ := .ctx }}
{{- $v := index $.Values .component }}
{{- if $.Values.redisAuth.enabled }}
- name: ANOMALY_REDIS__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "latency-anomaly.redisAuthSecretName" $ }}
      key: {{ $.Values.redisAuth.existingSecretKey }}
{{- end }}
{{- if include "latency-anomaly.sentinelAuth" $ }}
- name: ANOMALY_REDIS__SENTINEL__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "latency-anomaly.sentinelAuthSecretName" $ }}
      key: {{ $.Values.externalRedis.sentinel.auth.existingSecretKey }}
{{- end }}
{{- /* The checker's trace analysis reads ingester.tempo, credentials included. */}}
{{- $tempoClient := has .component (list "checker" "ingester") }}
{{- if and $tempoClient (eq $.Values.tempoAuth.type "basic") }}
- name: ANOMALY_INGESTER__TEMPO__AUTH__USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "latency-anomaly.tempoAuthSecretName" $ }}
      key: {{ $.Values.tempoAuth.existingSecretKeys.username }}
- name: ANOMALY_INGESTER__TEMPO__AUTH__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "latency-anomaly.tempoAuthSecretName" $ }}
      key: {{ $.Values.tempoAuth.existingSecretKeys.password }}
{{- end }}
{{- if and $tempoClient (eq $.Values.tempoAuth.type "bearer") }}
- name: ANOMALY_INGESTER__TEMPO__AUTH__TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "latency-anomaly.tempoAuthSecretName" $ }}
      key: {{ $.Values.tempoAuth.existingSecretKeys.token }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod affinity: the component's `affinity`, else the `podAntiAffinity` preset (YAML, possibly empty). */}}
{{- define "latency-anomaly.component.affinity" -}}
{{- $v := index .ctx.Values .component }}
{{- if $v.affinity }}
{{- toYaml $v.affinity }}
{{- else if eq $v.podAntiAffinity "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "latency-anomaly.componentSelectorLabels" . | nindent 12 }}
{{- else if eq $v.podAntiAffinity "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "latency-anomaly.componentSelectorLabels" . | nindent 10 }}
{{- end }}
{{- end }}

{{- define "latency-anomaly.component.deployment" -}}
{{- $args := . }}
{{- $ := .ctx }}
{{- $component := .component }}
{{- $v := index $.Values $component }}
{{- $auth := include "latency-anomaly.apiAuthEnabled" . }}
{{- $env := include "latency-anomaly.component.env" . | trim }}
{{- $affinity := include "latency-anomaly.component.affinity" . | trim }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "latency-anomaly.componentFullname" . }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "latency-anomaly.componentLabels" . | nindent 4 }}
  {{- with $v.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "latency-anomaly.componentSelectorLabels" . | nindent 6 }}
  {{- with $v.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "latency-anomaly.componentLabels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") $ | sha256sum }}
        {{- if include "latency-anomaly.secretData" $ }}
        checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") $ | sha256sum }}
        {{- end }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "latency-anomaly.serviceAccountName" $ }}
      automountServiceAccountToken: {{ $.Values.serviceAccount.automountServiceAccountToken }}
      # Service links would inject variables such as ANOMALY_..._PORT for a Service whose name
      # starts with "anomaly", which the config loader would read as unknown keys.
      enableServiceLinks: false
      {{- with $.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with $affinity }}
      affinity:
        {{- . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- range . }}
        {{- $constraint := deepCopy . }}
        {{- if not $constraint.labelSelector }}
        {{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "latency-anomaly.componentSelectorLabels" $args | fromYaml)) }}
        {{- end }}
        - {{- toYaml $constraint | nindent 10 }}
        {{- end }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $component }}
          image: {{ include "latency-anomaly.image" $ }}
          imagePullPolicy: {{ $.Values.image.pullPolicy }}
          command:
            - /usr/local/bin/{{ $component }}
          args:
            - --config
            - /etc/latency-anomaly/config.yaml
            {{- range $v.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          ports:
            - name: http
              containerPort: {{ $v.port }}
              protocol: TCP
            {{- if and (eq $component "ingester") (include "latency-anomaly.otlpGrpc" $) }}
            - name: otlp-grpc
              containerPort: {{ $v.otlp.grpc.port }}
              protocol: TCP
            {{- end }}
          {{- with $env }}
          env:
            {{- . | nindent 12 }}
          {{- end }}
          {{- with $v.extraEnvFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $v.livenessProbe | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            {{- toYaml $v.readinessProbe | nindent 12 }}
          {{- with $v.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $.Values.containerSecurityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: config
              mountPath: /etc/latency-anomaly
              readOnly: true
            - name: tmp
              mountPath: /tmp
            {{- if $auth }}
            - name: api-tokens
              mountPath: {{ include "latency-anomaly.tokensDir" $component }}
              readOnly: true
            {{- end }}
            {{- if include "latency-anomaly.redisTls" $ }}
            - name: redis-tls
              mountPath: {{ include "latency-anomaly.redisTlsDir" $ }}
              readOnly: true
            {{- end }}
            {{- with $v.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "latency-anomaly.fullname" $ }}-config
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if $auth }}
        - name: api-tokens
          secret:
            secretName: {{ include "latency-anomaly.apiAuthSecretName" . }}
            defaultMode: 0440
            items:
              - key: {{ (index $.Values.apiAuth $component).existingSecretKey }}
                path: tokens
        {{- end }}
        {{- if include "latency-anomaly.redisTls" $ }}
        - name: redis-tls
          secret:
            secretName: {{ $.Values.externalRedis.tls.existingSecret }}
            defaultMode: 0440
            items:
              {{- range include "latency-anomaly.redisTlsFiles" $ | fromJsonArray }}
              - key: {{ index . 1 }}
                path: {{ index . 2 }}
              {{- end }}
        {{- end }}
        {{- with $v.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end }}

{{- define "latency-anomaly.component.service" -}}
{{- $ := .ctx }}
{{- $v := index $.Values .component }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "latency-anomaly.componentFullname" . }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "latency-anomaly.componentLabels" . | nindent 4 }}
    {{- with $v.service.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $v.service.type }}
  ports:
    - name: http
      port: {{ $v.service.port }}
      targetPort: http
      protocol: TCP
    {{- if eq .component "ingester" }}
    {{- if not (kindIs "invalid" $v.service.otlpHttpPort) }}
    # OTLP/HTTP's standard port; the ingester serves POST /v1/traces on its http port.
    - name: otlp-http
      port: {{ $v.service.otlpHttpPort }}
      targetPort: http
      protocol: TCP
    {{- end }}
    {{- if include "latency-anomaly.otlpGrpc" $ }}
    - name: otlp-grpc
      port: {{ $v.service.otlpGrpcPort }}
      targetPort: otlp-grpc
      protocol: TCP
      appProtocol: grpc
    {{- end }}
    {{- end }}
  selector:
    {{- include "latency-anomaly.componentSelectorLabels" . | nindent 4 }}
{{- end }}

{{- define "latency-anomaly.component.hpa" -}}
{{- $ := .ctx }}
{{- $a := (index $.Values .component).autoscaling }}
{{- if $a.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "latency-anomaly.componentFullname" . }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "latency-anomaly.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "latency-anomaly.componentFullname" . }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    {{- with $a.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
    {{- with $a.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "latency-anomaly.component.pdb" -}}
{{- $ := .ctx }}
{{- $p := (index $.Values .component).podDisruptionBudget }}
{{- if $p.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "latency-anomaly.componentFullname" . }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "latency-anomaly.componentLabels" . | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" $p.minAvailable) }}
  minAvailable: {{ $p.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $p.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "latency-anomaly.componentSelectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{- define "latency-anomaly.component.networkpolicy" -}}
{{- $ := .ctx }}
{{- $component := .component }}
{{- $v := index $.Values $component }}
{{- $np := $.Values.networkPolicy }}
{{- if $np.enabled }}
{{- $from := index $np.ingress $component }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "latency-anomaly.componentFullname" . }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "latency-anomaly.componentLabels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "latency-anomaly.componentSelectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    {{- if $np.egress.enabled }}
    - Egress
    {{- end }}
  ingress:
    - ports:
        - port: {{ $v.port }}
          protocol: TCP
        {{- if and (eq $component "ingester") (include "latency-anomaly.otlpGrpc" $) }}
        # OTLP/gRPC (OTLP/HTTP arrives on the port above, whichever Service port it came to).
        - port: {{ $v.otlp.grpc.port }}
          protocol: TCP
        {{- end }}
      {{- with $from }}
      from:
        {{- toYaml . | nindent 8 }}
        # The chart's own `helm test` pod.
        - podSelector:
            matchLabels:
              {{- include "latency-anomaly.componentSelectorLabels" (dict "ctx" $ "component" "test") | nindent 14 }}
      {{- end }}
  {{- if $np.egress.enabled }}
  egress:
    # DNS, wherever the cluster runs it.
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    {{- if $.Values.redis.enabled }}
    - to:
        - podSelector:
            matchLabels:
              {{- include "latency-anomaly.componentSelectorLabels" (dict "ctx" $ "component" "redis") | nindent 14 }}
      ports:
        - port: 6379
          protocol: TCP
    {{- else }}
    {{- $mode := include "latency-anomaly.redisMode" $ }}
    # The external Redis: its addresses are outside the cluster's pod selectors, so only the
    # ports are pinned.
    {{- if eq $mode "sentinel" }}
    # Mode sentinel: the sentinels' ports, and those of the primary and replicas they name.
    {{- else if eq $mode "cluster" }}
    # Mode cluster: the client port of every node (never the bus port, which only nodes use).
    {{- end }}
    - ports:
        {{- range include "latency-anomaly.redisEgressPorts" $ | fromJsonArray }}
        - port: {{ int . }}
          protocol: TCP
        {{- end }}
    {{- end }}
    {{- if and (has $component (list "checker" "ingester")) $.Values.config.ingester.tempo.url }}
    # Tempo, for the ingester's poller and the checker's trace analysis.
    - ports:
        - port: {{ include "latency-anomaly.urlPort" $.Values.config.ingester.tempo.url }}
          protocol: TCP
    {{- end }}
    {{- with $.Values.config.telemetry.otlp_endpoint }}
    # The OTLP collector the services send their own traces to.
    - ports:
        - port: {{ include "latency-anomaly.urlPort" . }}
          protocol: TCP
    {{- end }}
    {{- with $np.egress.extraRules }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}
