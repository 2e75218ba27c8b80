"""Baselines for BatchScheduling-v0 (request-level static batching)."""

POLICIES: dict = {}
