"""HTTP surfaces: thin routers, dependencies, and the one error map."""
