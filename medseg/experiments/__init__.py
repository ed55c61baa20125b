"""Workflows built from the library: model comparison, the demo, and the degradation experiment."""
