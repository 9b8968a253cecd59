"""The store conformance kit: the tests every abstractruntime store must pass, for any backend.

Each suite is a class of pytest tests. A backend's test module subclasses it and provides one
fixture that builds a fresh store; pytest then runs every inherited test against it (a
parametrised fixture runs them once per parameter). Our memory, file and PostgreSQL stores
run the same classes (``tests/conformance/``); docs/testing-kit.md walks through a new backend.

- :class:`RunStoreConformance`, :class:`LedgerStoreConformance`, :class:`RuntimeConformance`:
  define ``backend``, returning a :class:`StoreBackend` (a run store, a ledger store and the
  capabilities they claim; a capability not claimed is skipped, not failed).
- :class:`CapabilityConformance`: define ``backend`` too; tests each capability the stores declare
  (``abstractruntime.core.ports.Capability``), and only those.
- :class:`SnapshotStoreConformance`: define ``make_store``, returning a callable
  ``make_store(clock=None)`` that builds a new, empty snapshot store.
- :class:`ArtifactStoreConformance`: define ``store``, a new, empty artifact store that reads
  the suite's ``clock`` fixture (a :class:`~abstractruntime.core.clock.FixedClock`).

Example (a test module of the backend's own project)::

    import pytest
    from abstractruntime.testing import LedgerStoreConformance, RunStoreConformance, StoreBackend

    class TestMyStores(RunStoreConformance, LedgerStoreConformance):
        @pytest.fixture
        def backend(self, tmp_path):
            made = StoreBackend("mine", runs=MyRunStore(tmp_path), ledger=MyLedgerStore(tmp_path))
            yield made
            made.close()

It needs pytest and hypothesis (``pip install -e '.[testing]'`` from a clone); importing
:mod:`abstractruntime` never imports this package.
"""

from __future__ import annotations

from .artifact_store import ArtifactStoreConformance
from .backend import StoreBackend
from .capabilities import CapabilityConformance
from .ledger_store import LedgerStoreConformance
from .run_store import RunStoreConformance
from .runtime import RuntimeConformance
from .snapshot_store import SnapshotStoreConformance

__all__ = [
    "CapabilityConformance",
    "StoreBackend",
    "RunStoreConformance",
    "LedgerStoreConformance",
    "RuntimeConformance",
    "SnapshotStoreConformance",
    "ArtifactStoreConformance",
]
