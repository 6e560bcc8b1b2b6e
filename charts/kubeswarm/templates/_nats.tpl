{{/* The NATS server configuration (nats.conf), also hashed into the pods' annotation so a change restarts them. */}}
{{- define "kubeswarm.natsConfig" -}}
{{- $name := include "kubeswarm.natsName" . -}}
{{- $headless := printf "%s-headless" $name -}}
{{- $nats := .Values.nats -}}
{{- $auth := $nats.auth.enabled -}}
server_name: $SERVER_NAME
port: {{ $nats.clientPort }}
http_port: {{ $nats.monitorPort }}
pid_file: /var/run/nats/nats.pid
lame_duck_duration: {{ $nats.lameDuckDuration }}
lame_duck_grace_period: {{ $nats.lameDuckGracePeriod }}
jetstream {
  store_dir: /data
  max_file_store: {{ $nats.jetstream.fileStore.size }}
  max_memory_store: {{ $nats.jetstream.memoryStore.maxSize }}
}
{{- if $auth }}
# Operator mode: the operator JWT, the system account and the account resolver (the operator writes this file).
include "../nats-auth/auth.conf"
{{- end }}
{{- if gt (int $nats.replicas) 1 }}
cluster {
  name: {{ $name }}
  port: {{ $nats.clusterPort }}
  # Clients learn the servers' pod addresses from the route gossip otherwise; the Service is stabler.
  no_advertise: true
  {{- if $auth }}
  # Route auth, and the routes with its password (the operator writes this file from KUBESWARM_NATS_ROUTES).
  include "../nats-auth/routes.conf"
  {{- else }}
  routes: [
    {{- range $i := until (int $nats.replicas) }}
    nats://{{ $name }}-{{ $i }}.{{ $headless }}.{{ $.Release.Namespace }}.svc:{{ $nats.clusterPort }}
    {{- end }}
  ]
  {{- end }}
}
{{- end }}
{{- end -}}

{{/* The auth Secret the operator fills (docs/security.md), and host:port of every server's route port. */}}
{{- define "kubeswarm.natsAuthSecret" -}}
{{- printf "%s-auth" (include "kubeswarm.natsName" .) -}}
{{- end -}}

{{- define "kubeswarm.natsRoutes" -}}
{{- $name := include "kubeswarm.natsName" . -}}
{{- $routes := list -}}
{{- if gt (int .Values.nats.replicas) 1 -}}
{{- range $i := until (int .Values.nats.replicas) -}}
{{- $routes = append $routes (printf "%s-%d.%s-headless.%s.svc:%d" $name $i $name $.Release.Namespace (int $.Values.nats.clusterPort)) -}}
{{- end -}}
{{- end -}}
{{- join "," $routes -}}
{{- end -}}
