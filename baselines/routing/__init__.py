"""Routers for Routing-v0 (placeholder, filled below)."""

POLICIES: dict = {}
