"""Use cases joining engine and store."""
