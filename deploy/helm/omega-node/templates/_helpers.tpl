{{/* Names and labels. */}}
{{- define "omega-node.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* At most 50 characters: pod names add "-<ordinal>" and stay DNS labels. */}}
{{- define "omega-node.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "omega-node.selectorLabels" -}}
app.kubernetes.io/name: {{ include "omega-node.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "omega-node.labels" -}}
{{ include "omega-node.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "omega-node.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "omega-node.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the certificate files. */}}
{{- define "omega-node.certsSecret" -}}
{{- default (printf "%s-certs" (include "omega-node.fullname" .)) .Values.certs.existingSecret -}}
{{- end -}}

{{/* The Secret holding the admin and metrics tokens ("" when none). */}}
{{- define "omega-node.tokensSecret" -}}
{{- if .Values.tokens.existingSecret -}}
{{- .Values.tokens.existingSecret -}}
{{- else if or .Values.tokens.adminToken .Values.tokens.metricsToken -}}
{{- printf "%s-tokens" (include "omega-node.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Whether an admin / metrics token is configured ("true" or ""). */}}
{{- define "omega-node.hasAdminToken" -}}
{{- if .Values.tokens.existingSecret -}}{{- if .Values.tokens.adminTokenKey -}}true{{- end -}}
{{- else if .Values.tokens.adminToken -}}true{{- end -}}
{{- end -}}
{{- define "omega-node.hasMetricsToken" -}}
{{- if .Values.tokens.existingSecret -}}{{- if .Values.tokens.metricsTokenKey -}}true{{- end -}}
{{- else if .Values.tokens.metricsToken -}}true{{- end -}}
{{- end -}}

{{/* Paths inside the pod. */}}
{{- define "omega-node.secretsDir" -}}/run/omega/secrets{{- end -}}
{{- define "omega-node.configFile" -}}/etc/omega/node.toml{{- end -}}
{{- define "omega-node.dataDir" -}}/var/lib/omega-node{{- end -}}

{{/* Refuses values the node would refuse at start. */}}
{{- define "omega-node.validate" -}}
{{- $kind := .Values.store.kind -}}
{{- if not (has $kind (list "redb" "scylla")) -}}
{{- fail (printf "store.kind must be \"redb\" or \"scylla\", not %q" $kind) -}}
{{- end -}}
{{- if and (eq $kind "redb") (ne (int .Values.replicas) 1) -}}
{{- fail "store.kind \"redb\" keeps each node's data in its own file: replicas must be 1 (use store.kind \"scylla\" for several nodes)" -}}
{{- end -}}
{{- if lt (int .Values.replicas) 1 -}}
{{- fail "replicas must be at least 1" -}}
{{- end -}}
{{- if and (eq $kind "scylla") (empty .Values.store.scylla.contactPoints) -}}
{{- fail "store.scylla.contactPoints is required with store.kind \"scylla\"" -}}
{{- end -}}
{{- if and (eq $kind "scylla") (empty .Values.store.scylla.replication) -}}
{{- fail "store.scylla.replication is required with store.kind \"scylla\" (e.g. class: NetworkTopologyStrategy, <datacenter>: \"3\")" -}}
{{- end -}}
{{- if and .Values.store.scylla.username (not .Values.store.scylla.passwordSecret.name) -}}
{{- fail "store.scylla.username needs store.scylla.passwordSecret.name" -}}
{{- end -}}
{{- if empty .Values.regions -}}
{{- fail "regions must not be empty" -}}
{{- end -}}
{{- if gt (int .Values.cluster.heartbeatSecs) (div (int .Values.federation.intervalSecs) 3) -}}
{{- fail "cluster.heartbeatSecs must be at most federation.intervalSecs / 3" -}}
{{- end -}}
{{- if and (not .Values.certs.existingSecret) (empty .Values.certs.files) -}}
{{- fail "certs: set certs.existingSecret or certs.files (omega-certs export-node output)" -}}
{{- end -}}
{{- range $name, $_ := .Values.certs.files -}}
{{- if or (hasSuffix "ca.key" $name) (not (regexMatch "^[a-z0-9][a-z0-9.-]*[.](crt|crl|key)$" $name)) -}}
{{- fail (printf "certs.files: %q is not a file of a node's certificate directory (no CA keys)" $name) -}}
{{- end -}}
{{- end -}}
{{- if not .Values.certs.existingSecret -}}
{{- $files := .Values.certs.files -}}
{{- range (include "omega-node.certFiles" . | fromYamlArray) -}}
{{- if not (hasKey $files .) -}}
{{- fail (printf "certs.files has no %q (omega-certs export-node output for every pod)" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $t := list .Values.tokens.adminToken .Values.tokens.metricsToken -}}
{{- if and $t (lt (len $t) 32) -}}
{{- fail "tokens must be at least 32 bytes (e.g. openssl rand -hex 32)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Every certificate file the pods need, as a YAML list. */}}
{{- define "omega-node.certFiles" -}}
- device-ca.crt
- device-ca.crl
- node-ca.crt
- node-ca.crl
{{- $full := include "omega-node.fullname" . }}
{{- range $i := until (int .Values.replicas) }}
- {{ printf "%s-%d.crt" $full $i }}
- {{ printf "%s-%d.key" $full $i }}
{{- end }}
{{- end -}}

{{/* The token keys in the tokens Secret. */}}
{{- define "omega-node.adminTokenKey" -}}
{{- if .Values.tokens.existingSecret -}}{{ .Values.tokens.adminTokenKey }}{{- else -}}admin-token{{- end -}}
{{- end -}}
{{- define "omega-node.metricsTokenKey" -}}
{{- if .Values.tokens.existingSecret -}}{{ .Values.tokens.metricsTokenKey }}{{- else -}}metrics-token{{- end -}}
{{- end -}}

{{/* host:port, IPv6 hosts in brackets; (list host port). */}}
{{- define "omega-node.hostPort" -}}
{{- $host := index . 0 -}}
{{- if contains ":" $host -}}[{{ $host }}]:{{ index . 1 }}{{- else -}}{{ $host }}:{{ index . 1 }}{{- end -}}
{{- end -}}
