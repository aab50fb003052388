"""Dialect parsers: each turns its API's request body into a ``ChatRequest`` (one module per dialect)."""
