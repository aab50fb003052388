"""Sluice's internals: configuration, errors, events, framing, the runner and the routes."""
