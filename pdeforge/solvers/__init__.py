"""Classical reference solvers: numerics only (arrays in, arrays out, no files)."""
