"""When a run's secret values go: once it has finished and no snapshot refers to them — also after kills.

Real processes (the installed command) killed with SIGKILL inside handlers and right after a
run's last record (before its values were dropped), on a folder store and on PostgreSQL. A
later open of the run (``runs show``, ``tick``) or a worker pass drops what a kill left; a value
a live run still needs is never dropped because a checkpoint was written or deleted, and when
it is truly gone the run stops with a clear error instead of calling a service with
``[REDACTED]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from secret_flow import ANSWER, Flow, scan_files, scan_rows, secret_files, secret_rows

SCHEMA = "abstractruntime"


class Store:
    def __init__(self, flow: Flow, url: str = "") -> None:
        self.flow, self.url = flow, url
        self.root = None if url else Path(flow.store)

    def secrets(self) -> dict[str, list[dict[str, Any]]]:
        return secret_files(self.root) if self.root is not None else secret_rows(self.url, SCHEMA)

    def leaked(self) -> dict[str, list[str]]:
        return scan_files(self.root) if self.root is not None else scan_rows(self.url, SCHEMA)

    def sql(self, statement: str, *params: Any) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(statement, list(params))

    def delete_checkpoint(self, run_id: str) -> None:
        if self.root is not None:
            (self.root / "runs" / run_id / "run.json").unlink()
        else:
            self.sql(f"UPDATE {SCHEMA}.runs SET checkpoint_json = %s WHERE run_id = %s",
                     b"{}", run_id)

    def delete_secrets(self, run_id: str) -> None:
        if self.root is not None:
            (self.root / "runs" / run_id / "secrets.jsonl").unlink()
        else:
            self.sql(f"DELETE FROM {SCHEMA}.secrets WHERE run_id = %s", run_id)


@pytest.fixture(params=["folder", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "postgres":
        url = request.getfixturevalue("database_url")
        return Store(Flow(tmp_path, url), url)
    return Store(Flow(tmp_path, str(tmp_path / "store")))


def _waiting(flow: Flow, run_id: str) -> None:
    assert flow.start(run_id).returncode == 1
    assert flow.cli("retry", run_id).returncode == 5


def test_a_lost_checkpoint_never_turns_a_secret_into_a_placeholder(store: Store) -> None:
    flow = store.flow
    _waiting(flow, "r1")
    store.delete_checkpoint("r1")
    assert flow.cli("resume", "r1", "--current", "--answer", ANSWER).returncode == 1
    seen = flow.seen("r1")
    assert "job_key=sk-live-S3CRET01startKey0123456789abcdef" in seen and "[REDACTED]" not in seen
    assert store.secrets() == {}


def test_a_value_that_is_truly_gone_stops_the_run_with_a_clear_error(store: Store) -> None:
    flow = store.flow
    _waiting(flow, "r1")
    before = flow.cli("ledger", "show", "r1", "--jsonl").stdout
    store.delete_secrets("r1")
    refused = flow.cli("resume", "r1", "--current", "--answer", ANSWER)
    assert refused.returncode == 3, refused.stderr
    assert "missing from the run's secrets store" in refused.stderr
    assert "job_key" not in flow.seen("r1")  # the service was never called with a placeholder
    assert flow.cli("ledger", "show", "r1", "--jsonl").stdout == before  # nothing written


def test_kills_leave_no_secret_behind_for_long(store: Store) -> None:
    flow = store.flow
    # Killed inside each handler, then continued by later commands: all values go at the end.
    codes = flow.drive("k1", kills=["tool", "job"])
    assert codes.count(-9) == 2, codes
    assert "k1" not in store.secrets()
    # Killed right after the last record, before the values were dropped: each is dropped by
    # the next open, tick or worker pass.
    for run_id in ("k2", "k3", "k4", "k5"):
        codes = flow.drive(run_id, release_kill=True)
        assert codes[-1] == -9, codes
    assert {"k2", "k3", "k4", "k5"} <= set(store.secrets())
    assert json.loads(flow.cli("runs", "show", "k2", "--json").stdout)["run"]["status"] == "failed"
    assert "k2" not in store.secrets()
    assert flow.cli("tick", "k3").returncode == 1
    assert "k3" not in store.secrets()
    worker = flow.cli("worker", "--once")
    assert worker.returncode == 0, worker.stderr
    assert store.secrets() == {}
    assert store.leaked() == {}
