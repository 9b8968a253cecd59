"""Snapshots keep no real secret; the values they need stay in their run's secrets store.

A snapshot holds the run's state document as the ledger holds it (secrets as markers, large
values as references) and the readers' view of it; its run's secrets store keeps the values
those markers commit to while the snapshot exists (a pin), and drops them when it is deleted.
Restoring or forking proves the snapshot's state against its run's ledger and fills the
secrets from its run's store — the fork commits them again under its own key — or refuses
(exit 3) when they are gone. Every step runs the installed command, on a folder store and on
PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from secret_flow import ANSWER, MARK, Flow, leaks, scan_files, scan_rows, secret_files, secret_rows

SCHEMA = "abstractruntime"  # the CLI's default PostgreSQL schema


class Setup:
    """A :class:`Flow` plus how to read its store's snapshots and secrets, whatever the backend."""

    def __init__(self, flow: Flow, url: str = "") -> None:
        self.flow = flow
        self.url = url
        self.root = Path(flow.store) if not url else None

    def cli(self, *args: str, **kwargs: Any) -> Any:
        return self.flow.cli(*args, **kwargs)

    def waiting(self, run_id: str) -> None:
        """A run waiting on its question, with its secrets live (the tool failed once, retried)."""
        assert self.flow.start(run_id).returncode == 1
        retried = self.cli("retry", run_id)
        assert retried.returncode == 5, retried.stderr

    def finish(self, run_id: str) -> None:
        """Answer the run: it goes on and fails on its last node (a finished run)."""
        done = self.cli("resume", run_id, "--current", "--answer", ANSWER)
        assert done.returncode == 1, done.stderr
        assert json.loads(self.cli("runs", "show", run_id, "--json").stdout)["run"]["status"] == "failed"

    def snapshot_bytes(self, snapshot_id: str) -> bytes:
        if self.root is not None:
            return (self.root / "snapshots" / f"{snapshot_id}.json").read_bytes()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(f"SELECT snapshot_json FROM {SCHEMA}.snapshots WHERE snapshot_id = %s",
                               [snapshot_id]).fetchone()
        return bytes(row[0])

    def secrets(self) -> dict[str, list[dict[str, Any]]]:
        return secret_files(self.root) if self.root is not None else secret_rows(self.url, SCHEMA)

    def leaked(self) -> dict[str, list[str]]:
        """Real values anywhere outside the secrets stores (every file, or every row)."""
        return scan_files(self.root) if self.root is not None else scan_rows(self.url, SCHEMA)

    def drop_secrets(self, run_id: str) -> None:
        if self.root is not None:
            (self.root / "runs" / run_id / "secrets.jsonl").unlink()
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {SCHEMA}.secrets WHERE run_id = %s", [run_id])

    def head(self, run_id: str) -> int:
        return int(json.loads(self.cli("verify", run_id, "--json").stdout)["head_seq"])

    def exists(self, run_id: str) -> bool:
        return self.cli("runs", "show", run_id).returncode == 0


@pytest.fixture(params=["folder", "postgres"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    if request.param == "postgres":
        url = request.getfixturevalue("database_url")
        return Setup(Flow(tmp_path, url), url)
    return Setup(Flow(tmp_path, str(tmp_path / "store")))


@pytest.fixture
def folder(tmp_path: Path) -> Setup:
    return Setup(Flow(tmp_path, str(tmp_path / "store")))


def _values(entries: list[dict[str, Any]]) -> list[Any]:
    return [e["value"] for e in entries if "commitment" in e]


def _pins(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if "pin" in e]


def test_a_snapshot_holds_no_secret_and_shows_none(setup: Setup) -> None:
    setup.waiting("r1")
    created = setup.cli("snapshot", "create", "r1", "--name", "before answer", "--json")
    assert created.returncode == 0, created.stderr
    snap_id = json.loads(created.stdout)["snapshot_id"]
    stored = setup.snapshot_bytes(snap_id)
    assert leaks(stored) == [] and b'"$secret"' in stored
    doc = json.loads(stored.split(b"\n")[0])
    assert doc["format"] == 2 and doc["state"]["run"]["vars"]["db_pass"]["$shown"] == "[REDACTED]"
    assert doc["run_state"]["vars"]["db_pass"] == "[REDACTED]" and doc["run_state"]["vars"]["plain"] == "visible value"
    shown = [created, setup.cli("snapshot", "show", snap_id), setup.cli("snapshot", "show", snap_id, "--json"),
             setup.cli("snapshot", "list", "--json"), setup.cli("snapshot", "list")]
    assert all(r.returncode == 0 for r in shown)
    assert [leaks((r.stdout + r.stderr).encode()) for r in shown] == [[]] * len(shown)
    # The snapshot pins the values its markers need, durably, in its run's secrets store.
    pins = _pins(setup.secrets()["r1"])
    assert [p["pin"] for p in pins] == [snap_id] and len(pins[0]["commitments"]) >= 10


def test_a_fork_of_a_finished_run_still_has_its_secrets(setup: Setup) -> None:
    setup.waiting("r1")
    snap_id = setup.cli("snapshot", "create", "r1", "--name", "asked").stdout.strip()
    setup.finish("r1")
    # The run finished: its values went, except those the snapshot pins (and the key that checks them).
    kept = setup.secrets()["r1"]
    pinned = set(_pins(kept)[0]["commitments"])
    assert {e["commitment"] for e in kept if "commitment" in e} == pinned
    assert "S3CRET26answerPW" not in json.dumps(kept)  # the answer came after the snapshot: released
    fork = setup.cli("snapshot", "restore", snap_id, "--fork", "--run-id", "f1", "--json")
    assert fork.returncode == 0, fork.stderr
    assert leaks(fork.stdout.encode()) == [] and json.loads(fork.stdout)["status"] == "waiting"
    done = setup.cli("resume", "f1", "--current", "--answer", ANSWER)
    assert done.returncode == 1, done.stderr
    # The fork's handlers got the real values, never a placeholder.
    assert "job_key=sk-live-S3CRET01startKey0123456789abcdef" in setup.flow.seen("f1")
    assert "[REDACTED]" not in setup.flow.seen("f1")
    # The fork finished: its own values went; the source keeps what the snapshot pins.
    secrets = setup.secrets()
    assert "f1" not in secrets and set(secrets) == {"r1"}
    assert setup.leaked() == {}
    # Deleting the snapshot releases them.
    assert setup.cli("snapshot", "delete", snap_id).returncode == 0
    assert setup.secrets() == {}
    assert setup.leaked() == {}


def test_restore_in_place_brings_the_real_values_back(setup: Setup) -> None:
    setup.waiting("r1")
    snap_id = setup.cli("snapshot", "create", "r1", "--name", "asked").stdout.strip()
    setup.finish("r1")
    restored = setup.cli("snapshot", "restore", snap_id, "--json")
    assert restored.returncode == 0, restored.stderr
    assert leaks(restored.stdout.encode()) == [] and json.loads(restored.stdout)["status"] == "waiting"
    done = setup.cli("resume", "r1", "--current", "--answer", ANSWER)
    assert done.returncode == 1, done.stderr
    seen = setup.flow.seen("r1").splitlines()
    assert seen.count("job_key=sk-live-S3CRET01startKey0123456789abcdef") == 2  # before and after the restore
    # A key only the workflow's own rules call secret stays redacted in the restore record too,
    # although `snapshot restore` imports no workflow code (and so knows none of its rules).
    assert setup.leaked() == {}
    assert set(setup.secrets()) == {"r1"}
    assert setup.cli("verify", "r1").returncode == 0


def test_a_snapshot_whose_secrets_are_gone_is_refused_not_restored_with_placeholders(setup: Setup) -> None:
    setup.waiting("r1")
    snap_id = setup.cli("snapshot", "create", "r1", "--name", "asked").stdout.strip()
    setup.finish("r1")
    setup.drop_secrets("r1")
    head = setup.head("r1")
    for args in (("snapshot", "restore", snap_id), ("snapshot", "restore", snap_id, "--fork", "--run-id", "f1")):
        refused = setup.cli(*args)
        assert refused.returncode == 3, refused.stderr
        assert "secret" in refused.stderr and "missing" in refused.stderr
        assert leaks((refused.stdout + refused.stderr).encode()) == []
    assert setup.head("r1") == head and not setup.exists("f1")


def test_a_snapshot_of_a_run_whose_values_were_released_is_refused(setup: Setup) -> None:
    setup.waiting("r1")
    setup.finish("r1")
    refused = setup.cli("snapshot", "create", "r1", "--name", "too late")
    assert refused.returncode == 3, refused.stderr
    assert "released" in refused.stderr
    assert setup.cli("snapshot", "list", "--json").stdout.strip() == "[]"
    # A past position whose state holds no secret can still be snapshotted.
    assert setup.cli("snapshot", "create", "r1", "--name", "start", "--at", "1").returncode == 3  # start vars: secrets


def _edit(setup: Setup, snap_id: str, change: Callable[[dict[str, Any]], None]) -> None:
    assert setup.root is not None
    path = setup.root / "snapshots" / f"{snap_id}.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _swap_commitments(doc: dict[str, Any]) -> None:
    variables = doc["state"]["run"]["vars"]
    variables["db_pass"]["$secret"], variables["userPin"]["$secret"] = \
        variables["userPin"]["$secret"], variables["db_pass"]["$secret"]


def _other_position(doc: dict[str, Any]) -> None:
    doc["ledger"] = {"seq": 1, "head_hash": doc["__first_hash"]}


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "state_value": lambda doc: doc["state"]["run"]["vars"].__setitem__("plain", "edited"),
    "state_node": lambda doc: doc["state"]["run"].__setitem__("current_node", "finish"),
    "swapped_commitments": _swap_commitments,
    "position": _other_position,
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edited_snapshot_state_is_refused(folder: Setup, edit: str) -> None:
    folder.waiting("r1")
    snap_id = folder.cli("snapshot", "create", "r1", "--name", "asked").stdout.strip()
    first_hash = json.loads(folder.cli("ledger", "show", "r1", "--json").stdout)[0]["record_hash"]

    def change(doc: dict[str, Any]) -> None:
        doc["__first_hash"] = first_hash
        EDITS[edit](doc)
        doc.pop("__first_hash")

    _edit(folder, snap_id, change)
    head = folder.head("r1")
    for args in (("snapshot", "restore", snap_id), ("snapshot", "restore", snap_id, "--fork", "--run-id", "f1")):
        refused = folder.cli(*args)
        assert refused.returncode == 3, (args, refused.stdout, refused.stderr)
        assert snap_id in refused.stderr and "ledger" in refused.stderr
    assert folder.head("r1") == head and not folder.exists("f1")


def test_editing_the_shown_state_changes_nothing_a_restore_does(folder: Setup) -> None:
    folder.waiting("r1")
    snap_id = folder.cli("snapshot", "create", "r1", "--name", "asked").stdout.strip()
    folder.finish("r1")

    def change(doc: dict[str, Any]) -> None:
        doc["run_state"]["vars"]["plain"] = "edited"
        doc["run_state"]["vars"]["db_pass"] = "attacker-value"
        doc["run_state"]["current_node"] = "finish"

    _edit(folder, snap_id, change)
    restored = folder.cli("snapshot", "restore", snap_id, "--json")
    assert restored.returncode == 0, restored.stderr
    state = json.loads(restored.stdout)
    assert state["current_node"] == "ask" and state["vars"]["plain"] == "visible value"
    assert state["vars"]["db_pass"] == "[REDACTED]"
    assert folder.cli("runs", "show", "r1", "--reveal", "vars.db_pass").stdout.strip() == "S3CRET03dbPass"


def test_a_fork_of_a_snapshot_whose_run_is_gone_uses_the_file_and_needs_its_secrets(folder: Setup) -> None:
    folder.waiting("r1")
    snap_id = folder.cli("snapshot", "create", "r1", "--name", "asked").stdout.strip()
    assert folder.root is not None
    shutil.rmtree(folder.root / "runs" / "r1")
    refused = folder.cli("snapshot", "restore", snap_id, "--fork", "--run-id", "f1")
    assert refused.returncode == 3 and "missing" in refused.stderr, refused.stderr
    assert not folder.exists("f1")


def test_format_1_snapshots_still_restore_and_fork(tmp_path: Path) -> None:
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "format1"
    store = tmp_path / "store"
    shutil.copytree(fixtures / "store", store)
    flow = Flow(tmp_path, str(store))
    flow.env["ABSTRACTRUNTIME_WORKFLOWS"] = str(fixtures / "workflows")
    snap_id = "327a9620-af94-4e91-9472-ff91784f1d33"
    shown = flow.cli("snapshot", "show", snap_id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["run_state"]["vars"] == {"service": "payments"}
    fork = flow.cli("snapshot", "restore", snap_id, "--fork", "--run-id", "f1", "--allow-drift", "--json")
    assert fork.returncode == 0, fork.stderr
    assert json.loads(fork.stdout)["vars"] == {"service": "payments"}
    restored = flow.cli("snapshot", "restore", snap_id, "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["status"] == "waiting"
    assert MARK not in restored.stdout


def test_store_copy_takes_a_snapshot_s_pinned_values_along(tmp_path: Path, database_url: str) -> None:
    folder = Setup(Flow(tmp_path, str(tmp_path / "store")))
    folder.waiting("r1")
    snap_id = folder.cli("snapshot", "create", "r1", "--name", "asked").stdout.strip()
    folder.finish("r1")
    copied = folder.cli("store", "copy", "--to", database_url)
    assert copied.returncode == 0, copied.stderr
    pg = Setup(Flow(tmp_path, database_url), database_url)  # the same workflow file and marks
    assert {e["pin"] for e in pg.secrets()["r1"] if "pin" in e} == {snap_id}
    fork = pg.cli("snapshot", "restore", snap_id, "--fork", "--run-id", "f1")
    assert fork.returncode == 0, fork.stderr
    assert pg.cli("resume", "f1", "--current", "--answer", ANSWER).returncode == 1
    assert "job_key=sk-live-S3CRET01startKey0123456789abcdef" in pg.flow.seen("f1")
    assert pg.leaked() == {} and folder.leaked() == {}
    assert pg.cli("snapshot", "delete", snap_id).returncode == 0
    assert pg.secrets() == {}
