"""kopf wiring: the composition root (:class:`.operator.Operator`) and the thin kopf handlers that feed it."""
