"""icrt export (see README)."""
