"""icrt benchmarks (see README)."""
