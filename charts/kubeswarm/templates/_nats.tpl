{{/* The NATS server configuration (nats.conf), also hashed into the pods' annotation so a change restarts them. */}}
{{- define "kubeswarm.natsConfig" -}}
{{- $name := include "kubeswarm.natsName" . -}}
{{- $headless := printf "%s-headless" $name -}}
{{- $nats := .Values.nats -}}
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
{{- if gt (int $nats.replicas) 1 }}
cluster {
  name: {{ $name }}
  port: {{ $nats.clusterPort }}
  # Clients learn the servers' pod addresses from the route gossip otherwise; the Service is stabler.
  no_advertise: true
  routes: [
    {{- range $i := until (int $nats.replicas) }}
    nats://{{ $name }}-{{ $i }}.{{ $headless }}.{{ $.Release.Namespace }}.svc:{{ $nats.clusterPort }}
    {{- end }}
  ]
}
{{- end }}
{{- end -}}
