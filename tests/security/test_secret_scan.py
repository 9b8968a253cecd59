"""The scan: no real secret anywhere a run leaves it, on a folder store and on PostgreSQL.

Runs of a workflow carrying 34 kinds of secret (:data:`secret_flow.KINDS`) through start
variables, variables its nodes set, effect payloads (headers in three shapes), results, a
retryable failure's error, an answer and the node error that ends them, are driven by the
installed command — one calmly, others killed with SIGKILL inside handlers, inside a node,
and right after their last record — and continued by later commands and a worker pass; one
is snapshotted while it waits and forked after it finished. Then every file of the store (and
every row of every table) is scanned: no real value outside the secrets store, and the
secrets store holds only what the live snapshot pins; once the snapshot is deleted, nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from secret_flow import ANSWER, KINDS, Flow, leaks, scan_files, scan_rows, secret_files, secret_rows

SCHEMA = "abstractruntime"


def test_the_workflow_carries_at_least_twenty_kinds_of_secret() -> None:
    assert len(KINDS) >= 20
    assert len({token for token, _ in KINDS.values()}) == len(KINDS)
    assert {where for _, where in KINDS.values()} == {"kept", "error"}


@pytest.mark.parametrize("backend", ["folder", "postgres"])
def test_no_secret_outside_the_secrets_store_and_none_left_once_runs_finished(
        backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = request.getfixturevalue("database_url") if backend == "postgres" else ""
    flow = Flow(tmp_path, url or str(tmp_path / "store"))
    root = None if url else Path(flow.store)

    def secrets() -> dict[str, list[dict[str, Any]]]:
        return secret_files(root) if root is not None else secret_rows(url, SCHEMA)

    def scan(*, skip_secrets: bool = True) -> dict[str, list[str]]:
        return scan_files(root, skip_secrets=skip_secrets) if root is not None \
            else scan_rows(url, SCHEMA, skip_secrets=skip_secrets)

    flow.drive("calm")
    assert -9 in flow.drive("killed-in-handlers", kills=["tool", "job"])
    assert -9 in flow.drive("killed-in-a-node", kills=["finish"])
    assert flow.drive("killed-after-its-last-record", release_kill=True)[-1] == -9
    # One run waits with its values live: the premise — every kind a run keeps is really kept.
    assert flow.start("snapped").returncode == 1
    assert flow.cli("retry", "snapped").returncode == 5
    live = json.dumps(secrets()["snapped"])
    later = ("S3CRET26", "S3CRET27", "S3CRET28", "S3CRET31", "S3CRET32")  # from the answer on
    kept = [name for name, (token, where) in KINDS.items() if where == "kept" and token not in later]
    assert len(kept) >= 20 and [name for name in kept if KINDS[name][0] not in live] == []
    snap_id = flow.cli("snapshot", "create", "snapped", "--name", "asked").stdout.strip()
    assert flow.cli("resume", "snapped", "--current", "--answer", ANSWER).returncode == 1
    fork = flow.cli("snapshot", "restore", snap_id, "--fork", "--run-id", "forked")
    assert fork.returncode == 0, fork.stderr
    assert flow.cli("resume", "forked", "--current", "--answer", ANSWER, kill="job").returncode == -9
    assert flow.cli("tick", "forked").returncode == 1
    assert "job_key=sk-live-S3CRET01startKey0123456789abcdef" in flow.seen("forked")
    worker = flow.cli("worker", "--once")
    assert worker.returncode == 0, worker.stderr

    runs = json.loads(flow.cli("runs", "list", "--json").stdout)
    assert sorted(r["run_id"] for r in runs) == ["calm", "forked", "killed-after-its-last-record",
                                                  "killed-in-a-node", "killed-in-handlers", "snapped"]
    assert {r["status"] for r in runs} == {"failed"}
    assert scan() == {}
    # Only the snapshot's source keeps values: exactly those the snapshot pins.
    left = secrets()
    assert set(left) == {"snapped"}
    pins = [e for e in left["snapped"] if "pin" in e]
    assert [p["pin"] for p in pins] == [snap_id]
    assert {e["commitment"] for e in left["snapped"] if "commitment" in e} <= set(pins[0]["commitments"])
    assert [t for t in later if t in json.dumps(left)] == []  # after the snapshot: released with the run

    assert flow.cli("snapshot", "delete", snap_id).returncode == 0
    assert secrets() == {}
    assert scan(skip_secrets=False) == {}
    # Every command's output over these runs is redacted too.
    outputs = [flow.cli("runs", "show", run["run_id"], "--json").stdout for run in runs]
    outputs += [flow.cli("ledger", "show", run["run_id"], "--jsonl").stdout for run in runs]
    assert leaks("".join(outputs).encode()) == []
