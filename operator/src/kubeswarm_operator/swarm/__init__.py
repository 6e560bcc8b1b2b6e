"""A Swarm: its members, gateway and status as pure functions, and the controller that converges them."""
