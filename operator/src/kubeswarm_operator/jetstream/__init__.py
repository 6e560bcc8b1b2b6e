"""The operator's own NATS connections and a Swarm's JetStream streams, consumers and buckets."""
