"""Ratio benchmarks of threadkit against the standard library and its peers."""
