"""Shared fixtures: every store backend the kernel ships (plus an upstream-style custom one).

``backend`` is parametrised over all of them, so a test that takes it runs once per backend;
``rt_backend`` covers the two a runtime is normally built on (memory and files).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.models import RunState, StepRecord
from abstractruntime.core.runtime import Runtime
from abstractruntime.storage.base import LedgerStore, RunStore
from abstractruntime.storage.in_memory import InMemoryLedgerStore, InMemoryRunStore
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore
from abstractruntime.storage.ledger_chain import HashChainedLedgerStore

# The instant every FixedClock in the battery starts at (timers are set relative to it).
T0_ISO = "2030-01-01T00:00:00+00:00"


class UpstreamStyleRunStore(RunStore):
    """A custom run store written the way upstream 0.0.1 users wrote them: save/load only."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, Any]] = {}

    def save(self, run: RunState) -> None:
        self._runs[run.run_id] = copy.deepcopy(run.to_dict())

    def load(self, run_id: str) -> Optional[RunState]:
        data = self._runs.get(run_id)
        return None if data is None else RunState.from_dict(copy.deepcopy(data))


class UpstreamStyleLedgerStore(LedgerStore):
    """A custom ledger store in upstream 0.0.1 style: ``asdict(record)`` per append, list back."""

    def __init__(self) -> None:
        self._records: dict[str, list[dict[str, Any]]] = {}

    def append(self, record: StepRecord) -> None:
        self._records.setdefault(record.run_id, []).append(copy.deepcopy(asdict(record)))

    def list(self, run_id: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self._records.get(run_id, []))


@dataclass
class Backend:
    """One run store + ledger store pair, with what the tests need to know about it."""

    name: str
    runs: RunStore
    ledger: LedgerStore
    root: Optional[Path] = None
    # Capabilities that differ between backends (the suite checks each one where it applies).
    queryable: bool = True
    locking: bool = True
    chained: bool = True
    # False when the run store keeps only the run (the RunStore ABC's checkpoint default).
    checkpoints: bool = True
    reopen: Optional[Callable[[], "Backend"]] = field(default=None, repr=False)

    @property
    def files(self) -> bool:
        """True for the file backends."""
        return self.root is not None

    def runtime(self, **kwargs: Any) -> Runtime:
        """A Runtime over this backend."""
        return Runtime(run_store=self.runs, ledger_store=self.ledger, **kwargs)

    def fingerprint(self, run_id: str) -> Any:
        """Everything stored for ``run_id``, to prove that a refused call wrote nothing."""
        if self.root is not None:
            run_dir = self.root / "runs" / run_id
            return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.name != ".lock"}
        checkpoint = self.runs.load_checkpoint(run_id)
        return (
            json.dumps(checkpoint.to_dict() if checkpoint else None, sort_keys=True, default=str),
            json.dumps(self.ledger.list(run_id), sort_keys=True, default=str),
        )


# Run stores differ only in the first four (the others pair the same run stores with chained ledgers).
RUN_BACKENDS = ["memory", "file-fsync", "file-none", "upstream-style"]
BACKENDS = ["memory", "file-fsync", "file-none", "chained-memory", "chained-file", "upstream-style",
            "chained-upstream-style"]


def make_backend(name: str, root: Path) -> Backend:
    """Build backend ``name`` (file backends live under ``root``)."""
    if name == "memory":
        # As upstream 0.0.1: the in-memory ledger on its own keeps no hash chain.
        return Backend(name, InMemoryRunStore(), InMemoryLedgerStore(), chained=False)
    if name == "chained-memory":
        return Backend(name, InMemoryRunStore(), HashChainedLedgerStore(InMemoryLedgerStore()))
    if name == "upstream-style":
        return Backend(name, UpstreamStyleRunStore(), UpstreamStyleLedgerStore(), queryable=False, locking=False,
                       chained=False, checkpoints=False)
    if name == "chained-upstream-style":
        return Backend(name, UpstreamStyleRunStore(), HashChainedLedgerStore(UpstreamStyleLedgerStore()),
                       queryable=False, locking=False, checkpoints=False)
    durability = "fsync" if name == "file-fsync" else "none"

    def build() -> Backend:
        runs = JsonFileRunStore(root, durability=durability)
        ledger: LedgerStore = JsonlLedgerStore(root, durability=durability)
        if name == "chained-file":
            ledger = HashChainedLedgerStore(ledger)
        return Backend(name, runs, ledger, root=root, reopen=build)

    return build()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Every backend, one test run each."""
    made = make_backend(request.param, tmp_path / "store")
    yield made
    if isinstance(made.runs, JsonFileRunStore):
        made.runs.close()


@pytest.fixture(params=RUN_BACKENDS)
def run_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Every distinct run store."""
    made = make_backend(request.param, tmp_path / "store")
    yield made
    if isinstance(made.runs, JsonFileRunStore):
        made.runs.close()


@pytest.fixture(params=["memory", "file"])
def rt_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The in-memory stores and the file stores (durability "none": these tests are about logic)."""
    made = make_backend("memory" if request.param == "memory" else "file-none", tmp_path / "store")
    yield made
    if isinstance(made.runs, JsonFileRunStore):
        made.runs.close()


@pytest.fixture
def file_backend(tmp_path: Path) -> Backend:
    """The file stores with durability "none"."""
    made = make_backend("file-none", tmp_path / "store")
    yield made
    made.runs.close()  # type: ignore[attr-defined]


@pytest.fixture
def clock() -> FixedClock:
    """A clock that stands still at T0 until the test moves it."""
    return FixedClock(T0_ISO)
