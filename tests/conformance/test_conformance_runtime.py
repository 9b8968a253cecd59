"""Runtime conformance (abstractruntime.testing) over every backend, including a custom upstream-style
store that implements only save/load/append/list (proving the port defaults are enough)."""

from __future__ import annotations

from abstractruntime.testing import RuntimeConformance


class TestRuntimeOverEveryBackend(RuntimeConformance):
    """Runs once per backend (the ``backend`` fixture, tests/conftest.py)."""
