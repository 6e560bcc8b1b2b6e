{{/* Object name prefix: <release>-kubeswarm, shortened to <release> when the release name already says kubeswarm. */}}
{{- define "kubeswarm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubeswarm.operatorName" -}}
{{- printf "%s-operator" (include "kubeswarm.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubeswarm.natsName" -}}
{{- printf "%s-nats" (include "kubeswarm.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubeswarm.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "kubeswarm.operatorName" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object of the release; "component" tells the operator, NATS and dashboards apart. */}}
{{- define "kubeswarm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: kubeswarm
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "kubeswarm.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "operator"). */}}
{{- define "kubeswarm.componentSelector" -}}
{{ include "kubeswarm.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kubeswarm.componentLabels" -}}
{{ include "kubeswarm.labels" .ctx }}
{{ include "kubeswarm.componentSelector" . }}
{{- end -}}

{{/* repository:tag[@digest] of an image block, the tag defaulting to the chart's appVersion: (dict "image" .Values.x.image "ctx" $). */}}
{{- define "kubeswarm.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The NATS URL Agents without a Swarm object use: the bundled cluster's Service, or nats.url. */}}
{{- define "kubeswarm.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s.%s.svc:%d" (include "kubeswarm.natsName" .) .Release.Namespace (int .Values.nats.clientPort) -}}
{{- else -}}
{{- required "nats.url is required when nats.enabled is false" .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/* The restricted Pod Security Standard, for every container the chart runs. */}}
{{- define "kubeswarm.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "kubeswarm.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Namespaces whose Agents the operator (and the PodMonitor) cover; empty means all. */}}
{{- define "kubeswarm.watchNamespaces" -}}
{{- join "," (uniq .Values.operator.watchNamespaces) -}}
{{- end -}}
