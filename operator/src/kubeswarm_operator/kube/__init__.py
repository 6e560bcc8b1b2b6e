"""The one door to the Kubernetes API and the shapes every layer shares: kinds, owned objects, conditions, watches, the World."""
