"""Shared fixtures: every store backend the kernel ships (plus an upstream-style custom one).

``backend`` is parametrised over all of them, so a test that takes it runs once per backend;
``rt_backend`` covers the two a runtime is normally built on (memory and files). The
``postgres`` backend runs against a throwaway PostgreSQL cluster the session starts itself
(``postgres_url``; tests/postgres/cluster.py), each test in a schema of its own.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.models import RunState, StepRecord
from abstractruntime.storage.base import LedgerStore, RunStore
from abstractruntime.storage.in_memory import InMemoryLedgerStore, InMemoryRunStore
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore
from abstractruntime.storage.ledger_chain import HashChainedLedgerStore
from abstractruntime.testing.backend import StoreBackend

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


# The conformance kit's pair of stores (abstractruntime.testing), as these tests name it.
Backend = StoreBackend


# Run stores differ only in the first four (the others pair the same run stores with chained ledgers).
RUN_BACKENDS = ["memory", "file-fsync", "file-none", "upstream-style", "postgres"]
BACKENDS = ["memory", "file-fsync", "file-none", "chained-memory", "chained-file", "upstream-style",
            "chained-upstream-style", "postgres"]


def make_backend(name: str, root: Path, *, postgres_url: Optional[str] = None) -> Backend:
    """Build backend ``name`` (file backends live under ``root``; ``postgres`` in ``postgres_url``)."""
    if name == "postgres":
        return _postgres_backend(postgres_url)
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


def _postgres_backend(url: Optional[str]) -> Backend:
    """The PostgreSQL stores in a fresh schema of the session's database (reopen: same schema)."""
    from abstractruntime.storage.postgres.store import PostgresStore

    assert url, "the postgres backend needs the postgres_url fixture"
    schema = f"t_{uuid.uuid4().hex[:16]}"
    closers: list[Callable[[], None]] = []

    def build() -> Backend:
        store = PostgresStore(url, schema=schema)
        closers.append(store.close)
        return Backend("postgres", store.runs, store.ledger, reopen=build, closers=closers)

    return build()


def _built(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return make_backend(request.param, tmp_path / "store", postgres_url=url)


def _teardown(made: Backend) -> None:
    if isinstance(made.runs, JsonFileRunStore):
        made.runs.close()
    for close in made.closers:
        close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Every backend, one test run each."""
    made = _built(request, tmp_path)
    yield made
    _teardown(made)


@pytest.fixture(params=RUN_BACKENDS)
def run_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Every distinct run store."""
    made = _built(request, tmp_path)
    yield made
    _teardown(made)


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


@pytest.fixture(autouse=True)
def registered_workflows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The operator's workflow registry of every test: the Python files it writes under its
    ``tmp_path``, at any depth. A command that continues a run finds the run's code there (by
    workflow id and sha256, never by a path the store names: docs/security.md), as it would
    through an operator's ``$ABSTRACTRUNTIME_WORKFLOWS``; subprocesses inherit it. Tests of the
    registry itself set or remove the variable."""
    entry = str(tmp_path / "**" / "*.py")
    monkeypatch.setenv("ABSTRACTRUNTIME_WORKFLOWS", entry)
    return entry


@pytest.fixture
def clock() -> FixedClock:
    """A clock that stands still at T0 until the test moves it."""
    return FixedClock(T0_ISO)


def _pg_cluster_module() -> Any:
    """tests/postgres/cluster.py, loaded by path (tests/ is not a package)."""
    path = Path(__file__).parent / "postgres" / "cluster.py"
    spec = importlib.util.spec_from_file_location("abstractruntime_tests_pg_cluster", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database in a throwaway PostgreSQL cluster started for this session (stopped at its end).

    Skipped only when PostgreSQL's ``initdb`` is not installed and ``CI`` is not ``true``;
    in CI a missing PostgreSQL fails the tests (.ci/run installs it).
    """
    cluster_module = _pg_cluster_module()
    bindir = cluster_module.require_bindir(cluster_module.find_bindir(), os.environ.get("CI"))
    cluster = cluster_module.Cluster(bindir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
