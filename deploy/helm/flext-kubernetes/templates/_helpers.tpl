{{/*
Names, labels and the worker config, shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "flext-kubernetes.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object name: fullnameOverride, else the release name when it already contains
the chart name, else `<release>-<name>`. At most 52 characters: the StatefulSet's pods carry a
`controller-revision-hash` label of `<name>-<10 characters>`, which must fit a label value (63).
*/}}
{{- define "flext-kubernetes.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "flext-kubernetes.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* `helm.sh/chart`: name and version, `+` (not allowed in labels) replaced. */}}
{{- define "flext-kubernetes.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* What selects the worker pods (immutable in the StatefulSet: never add to it). */}}
{{- define "flext-kubernetes.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flext-kubernetes.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end -}}

{{/* The labels of every object of the chart. */}}
{{- define "flext-kubernetes.labels" -}}
helm.sh/chart: {{ include "flext-kubernetes.chart" . }}
app.kubernetes.io/name: {{ include "flext-kubernetes.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flext-kubernetes
{{- end -}}

{{/* The worker image: `repository@digest`, else `repository:tag` (tag default appVersion). */}}
{{- define "flext-kubernetes.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespace of the Kubernetes Jobs: jobs.namespace, else the release namespace. */}}
{{- define "flext-kubernetes.jobNamespace" -}}
{{- default .Release.Namespace .Values.jobs.namespace -}}
{{- end -}}

{{/* The worker's ServiceAccount. */}}
{{- define "flext-kubernetes.serviceAccountName" -}}
{{- default (include "flext-kubernetes.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The job pods' ServiceAccount. */}}
{{- define "flext-kubernetes.jobsServiceAccountName" -}}
{{- default (printf "%s-jobs" (include "flext-kubernetes.fullname" .)) .Values.jobs.serviceAccount.name -}}
{{- end -}}

{{/*
The `runtime.config` mapping: the chart's defaults with .Values.config merged over them (maps
merged key by key, lists and scalars replaced). Fails on the keys the chart owns.
*/}}
{{- define "flext-kubernetes.settings" -}}
{{- $jobNamespace := include "flext-kubernetes.jobNamespace" . -}}
{{- $jobsSA := include "flext-kubernetes.jobsServiceAccountName" . -}}
{{- $given := deepCopy (.Values.config | default dict) -}}
{{- $cluster := get $given "cluster" | default dict -}}
{{- if and (hasKey $cluster "namespace") (ne (toString $cluster.namespace) $jobNamespace) -}}
{{- fail (printf "config.cluster.namespace (%v) differs from the job namespace %s: set jobs.namespace instead, so that the Role, the jobs ServiceAccount and the jobs NetworkPolicy go there too" $cluster.namespace $jobNamespace) -}}
{{- end -}}
{{- $template := get $given "job_template" | default dict -}}
{{- if and (hasKey $template "service_account") (ne (toString $template.service_account) $jobsSA) -}}
{{- fail (printf "config.job_template.service_account (%v) differs from the jobs ServiceAccount %s: set jobs.serviceAccount.name instead" $template.service_account $jobsSA) -}}
{{- end -}}
{{- $worker := get $given "worker" | default dict -}}
{{- if hasKey $worker "name" -}}
{{- fail "config.worker.name must not be set: the chart names each worker pod wk-<worker_group>-<pod name> (stable across restarts, unique per pod)" -}}
{{- end -}}
{{- $defaults := dict
      "windmill" (dict "worker_group" "k8s" "tags" (list "k8s"))
      "cluster" (dict "namespace" $jobNamespace)
      "job_template" (dict "image" (include "flext-kubernetes.image" .) "service_account" $jobsSA)
      "worker" (dict "http" (dict "listen" "0.0.0.0:9464")) -}}
{{- $settings := mustMergeOverwrite $defaults $given -}}
{{- $group := toString $settings.windmill.worker_group -}}
{{- if not (regexMatch "^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$" $group) -}}
{{- fail (printf "config.windmill.worker_group `%s` must be a Kubernetes label value (1 to 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit): the worker labels its job pods with it" $group) -}}
{{- end -}}
{{- toYaml $settings -}}
{{- end -}}

{{/* The worker config file. */}}
{{- define "flext-kubernetes.configFile" -}}
{{- $settings := include "flext-kubernetes.settings" . | fromYaml -}}
{{- toYaml (dict "runtime" (dict "type" "kubernetes" "config" $settings)) -}}
{{- end -}}

{{/* The worker group of the merged config. */}}
{{- define "flext-kubernetes.workerGroup" -}}
{{- (include "flext-kubernetes.settings" . | fromYaml).windmill.worker_group | toString -}}
{{- end -}}

{{/*
config.worker.shutdown_grace in whole seconds, rounded up, parsed as the worker parses durations
(`500ms`, `30s`, `2m`/`2min`, `1h`, `1d`, or a number of seconds); 30 when not set.
*/}}
{{- define "flext-kubernetes.shutdownGraceSeconds" -}}
{{- $settings := include "flext-kubernetes.settings" . | fromYaml -}}
{{- $text := trim (toString (dig "worker" "shutdown_grace" "30s" $settings)) -}}
{{- $match := regexFindAll "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)\\s*(ms|s|m|min|h|d)?$" $text 1 -}}
{{- if not $match -}}
{{- fail (printf "config.worker.shutdown_grace `%s` is not a duration; write it like 30s, 2m or 1h" $text) -}}
{{- end -}}
{{- $number := regexReplaceAll "^([0-9.]+).*$" $text "${1}" | float64 -}}
{{- $unit := regexReplaceAll "^[0-9.]+\\s*" $text "" -}}
{{- $factor := get (dict "ms" 0.001 "" 1.0 "s" 1.0 "m" 60.0 "min" 60.0 "h" 3600.0 "d" 86400.0) $unit -}}
{{- mulf $number $factor | ceil | int64 -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: the value given, which must exceed the shutdown grace, else the
shutdown grace + 15 s (time to stop claiming, hand jobs over and flush logs after the grace).
*/}}
{{- define "flext-kubernetes.terminationGracePeriodSeconds" -}}
{{- $grace := include "flext-kubernetes.shutdownGraceSeconds" . | int64 -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $grace 15 -}}
{{- else -}}
{{- $given := .Values.terminationGracePeriodSeconds | int64 -}}
{{- if le $given $grace -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than config.worker.shutdown_grace (%d s): the worker would be killed while its jobs still finish; leave it unset for shutdown_grace + 15 s" $given $grace) -}}
{{- end -}}
{{- $given -}}
{{- end -}}
{{- end -}}

{{/*
The `to` peers of a NetworkPolicy destination {cidrs, namespaceSelector, podSelector}: one ipBlock
per CIDR, plus one peer with both selectors when either is given. Empty: any address.
*/}}
{{- define "flext-kubernetes.peers" -}}
{{- $peers := list -}}
{{- range (.cidrs | default list) -}}
{{- $peers = append $peers (dict "ipBlock" (dict "cidr" .)) -}}
{{- end -}}
{{- if or .namespaceSelector .podSelector -}}
{{- $peer := dict -}}
{{- with .namespaceSelector }}{{- $_ := set $peer "namespaceSelector" . -}}{{- end -}}
{{- with .podSelector }}{{- $_ := set $peer "podSelector" . -}}{{- end -}}
{{- $peers = append $peers $peer -}}
{{- end -}}
{{- toYaml $peers -}}
{{- end -}}

{{/* One egress rule to a destination {cidrs, namespaceSelector, podSelector, ports}. */}}
{{- define "flext-kubernetes.egressRule" -}}
{{- $peers := include "flext-kubernetes.peers" . | fromYamlArray -}}
{{- $rule := dict -}}
{{- with .ports }}{{- $_ := set $rule "ports" . -}}{{- end -}}
{{- if $peers }}{{- $_ := set $rule "to" $peers -}}{{- end -}}
{{- toYaml (list $rule) -}}
{{- end -}}

{{/* The labels the worker puts on every pod of its group (src/executor/kubernetes/render). */}}
{{- define "flext-kubernetes.jobPodSelector" -}}
app.kubernetes.io/managed-by: flext-kubernetes
flext.dev/worker-group: {{ include "flext-kubernetes.workerGroup" . | quote }}
{{- end -}}

{{/*
The port of the worker's HTTP endpoint (/healthz, /readyz, /metrics) from
config.worker.http.listen; empty when the endpoint is off (null).
*/}}
{{- define "flext-kubernetes.httpPort" -}}
{{- $settings := include "flext-kubernetes.settings" . | fromYaml -}}
{{- $listen := dig "worker" "http" "listen" "" $settings -}}
{{- if $listen -}}
{{- $port := regexFind "[0-9]+$" (toString $listen) -}}
{{- if or (not $port) (eq $port "0") -}}
{{- fail (printf "config.worker.http.listen `%v` needs a fixed port (address:port, e.g. 0.0.0.0:9464): the probes and scrapes reach it there; or null to turn the endpoint off" $listen) -}}
{{- end -}}
{{- $port -}}
{{- end -}}
{{- end -}}

{{/* config.worker.concurrency of the merged config: the jobs one worker runs at once (the
worker's default, 64, when not set; tests/chart.rs checks the two agree). */}}
{{/*
The port warm pods call the worker's hand-over at (config.worker.handover.listen, default
0.0.0.0:9443); empty without config.warm_pools.
*/}}
{{- define "flext-kubernetes.handoverPort" -}}
{{- $settings := include "flext-kubernetes.settings" . | fromYaml -}}
{{- if $settings.warm_pools -}}
{{- $listen := dig "worker" "handover" "listen" "0.0.0.0:9443" $settings -}}
{{- $port := regexFind "[0-9]+$" (toString $listen) -}}
{{- if or (not $port) (eq $port "0") -}}
{{- fail (printf "config.worker.handover.listen `%v` needs a fixed port (address:port, e.g. 0.0.0.0:9443): warm pods and the NetworkPolicy reach it there" $listen) -}}
{{- end -}}
{{- $port -}}
{{- end -}}
{{- end -}}

{{- define "flext-kubernetes.concurrency" -}}
{{- $settings := include "flext-kubernetes.settings" . | fromYaml -}}
{{- dig "worker" "concurrency" 64 $settings | int64 -}}
{{- end -}}

{{/*
Which autoscaler owns the StatefulSet's replicas: `keda`, `hpa`, or empty (replicaCount). Both at
once fails: two HPAs on one StatefulSet (KEDA makes one of its own) would set it in turn.
*/}}
{{- define "flext-kubernetes.autoscaler" -}}
{{- $keda := .Values.autoscaling.keda.enabled -}}
{{- $hpa := .Values.autoscaling.hpa.enabled -}}
{{- if and $keda $hpa -}}
{{- fail "autoscaling.keda.enabled and autoscaling.hpa.enabled are both true: KEDA makes a HorizontalPodAutoscaler of its own, and two of them would fight over the workers' replicas; enable one (KEDA where it is installed, else the HPA)" -}}
{{- end -}}
{{- $min := .Values.autoscaling.minReplicas | int64 -}}
{{- $max := .Values.autoscaling.maxReplicas | int64 -}}
{{- if and (or $keda $hpa) (lt $max $min) -}}
{{- fail (printf "autoscaling.maxReplicas (%d) is below autoscaling.minReplicas (%d): raise maxReplicas" $max $min) -}}
{{- end -}}
{{- if and $hpa (eq $min 0) -}}
{{- fail "autoscaling.minReplicas 0 needs KEDA (autoscaling.keda.enabled): a HorizontalPodAutoscaler keeps at least 1 pod; set minReplicas to 1 or more" -}}
{{- end -}}
{{- if $keda }}keda{{ else if $hpa }}hpa{{ end -}}
{{- end -}}

{{/* The worker's tags (config.windmill.tags of the merged config), as a YAML list. */}}
{{- define "flext-kubernetes.tags" -}}
{{- $settings := include "flext-kubernetes.settings" . | fromYaml -}}
{{- $tags := $settings.windmill.tags -}}
{{- if or (not (kindIs "slice" $tags)) (not $tags) -}}
{{- fail (printf "config.windmill.tags must be a non-empty list of tags (got %v): the autoscaler counts the queue of those tags" $tags) -}}
{{- end -}}
{{- toYaml $tags -}}
{{- end -}}

{{/*
The KEDA query: files/keda-queue-depth.sql with its tags parameter `$1` written in as
ARRAY[E'<tag>', ...]::text[]. Each tag is an escape string literal (backslash and quote doubled),
which means the same whatever the server's standard_conforming_strings: no tag can end the
literal or the query.
*/}}
{{- define "flext-kubernetes.kedaQuery" -}}
{{- $literals := list -}}
{{- range (include "flext-kubernetes.tags" . | fromYamlArray) -}}
{{- $literals = append $literals (printf "E'%s'" (toString . | replace "\\" "\\\\" | replace "'" "''")) -}}
{{- end -}}
{{- $file := .Files.Get "files/keda-queue-depth.sql" | trim -}}
{{- if not (contains "ANY($1)" $file) -}}
{{- fail "files/keda-queue-depth.sql has no `ANY($1)` for the tags: the chart cannot fill them in" -}}
{{- end -}}
{{- replace "ANY($1)" (printf "ANY(ARRAY[%s]::text[])" (join ", " $literals)) $file -}}
{{- end -}}
