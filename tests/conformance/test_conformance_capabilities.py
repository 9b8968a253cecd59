"""Capability conformance (abstractruntime.testing) over every backend: what each store declares, tested."""

from __future__ import annotations

from abstractruntime.testing import CapabilityConformance


class TestCapabilities(CapabilityConformance):
    """Runs once per backend: memory, files, chained wrappers, upstream-style (declares nothing), PostgreSQL."""
