"""An Agent: its children and status as pure functions, and the reconciler that converges them."""
