"""Data: sources and their hashes, IDX files, splits, synthesised non-digits and printed digits."""
