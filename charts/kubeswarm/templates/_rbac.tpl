{{/*
What the operator does, verb by verb (kubeswarm_operator.wiring, .kube and .loops):
- Agents and Swarms: kopf lists and watches them and patches their metadata (finalizer,
  progress annotations); the reconciler patches Agent status. A Swarm creates, updates and
  deletes its member Agents and writes its own status.
- The children of an Agent: listed and watched (the operator's view of the cluster), applied
  server-side (patch), created (generated Secrets, never overwritten) and deleted (an
  Ingress or PodDisruptionBudget no longer wanted). ConfigMaps are watched whole; Secrets only
  the operator's own (label selector) and each one an Agent references (by name): a change to
  one an Agent references rolls its pods. RBAC cannot narrow list/watch to those, hence secrets
  in the rules; set operator.watchNamespaces to confine them to some namespaces (Roles).
- Agents' scale subresource: the backlog autoscaler sets replicas through it, as an HPA does.
- HorizontalPodAutoscalers: read only, so the operator never fights a user's HPA.
- Events (core, so they carry lastTimestamp and sort with the rest): created on Agents and Swarms for every notable transition.
- HTTPRoutes (Gateway API): a Swarm gateway or an Agent's route where a Gateway serves MCP.
*/}}
{{- define "kubeswarm.operatorRules" -}}
- apiGroups: [kubeswarm.io]
  resources: [agents, swarms]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [kubeswarm.io]
  resources: [agents/status, swarms/status]
  verbs: [get, patch]
- apiGroups: [kubeswarm.io]
  resources: [agents/scale]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [configmaps, secrets, services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies, ingresses]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}
