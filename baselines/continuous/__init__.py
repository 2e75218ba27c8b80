"""Baselines for ContinuousBatching-v0 (iteration-level continuous batching)."""

POLICIES: dict = {}
