"""icrt's tests: top level with torch (training, export); runtime/ torch-free (the runtime only)."""
