"""Per-Agent work on timers besides its children: backlog autoscaling, the AWS secret sync, HTTPRoutes."""
