"""CPU kernels and process settings the fast path relies on: the narrow-output conv, malloc tuning."""
