"""Editing where a format-4 outcome takes the run: every edit is caught, each by the layer that can.

The demo run (prov_helpers.run_demo) has two effect outcomes that move the run to the node their
intent named — seq 4 (``fetch`` → ``ask``) and seq 9 (``fetch2`` → ``done``) — and name no node
(docs/file-format.md, "Format 4"). An attacker adds a ``current_node`` to one (another node, or
the very node it implies), or turns it into a format-3 record (which implies nothing). Edited
alone, the record's hash gives it away; re-hashed with the chain after it, the state digest the
next checkpoint record carries does (the ledger rebuilds another state there); re-hashed with
every digest recomputed, the checkpoint does (its head is no longer in the ledger). A writer may
still name the implied node: a ledger whose outcome names it is not an edit, and verifies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from abstractruntime.storage.verify import verify_run

from prov_helpers import (
    ledger_path,
    open_demo,
    point_checkpoint_at,
    problem_types,
    read_records,
    rechain,
    rehash,
    run_demo,
    write_records,
)

OUTCOME_SEQ = 4  # the outcome of the `fetch` effect, whose intent named `ask`


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "store"
    store, runtime = open_demo(root)
    run_id = run_demo(runtime, "victim")
    store.close()
    records = read_records(ledger_path(root, run_id))
    outcome = records[OUTCOME_SEQ - 1]
    assert (outcome["format"], outcome["kind"], outcome["status"]) == (4, "effect", "completed")
    assert "current_node" not in outcome.get("delta", {})
    assert records[OUTCOME_SEQ - 2]["next_node"] == "ask"
    assert verify_run(root, run_id).ok
    return root, run_id


def _to_start(record: dict[str, Any]) -> None:
    record.setdefault("delta", {})["current_node"] = "start"  # the run would stay before its effect


def _to_ask(record: dict[str, Any]) -> None:
    record.setdefault("delta", {})["current_node"] = "ask"  # the node the outcome implies anyway


def _format_3(record: dict[str, Any]) -> None:
    record["format"] = 3  # a format-3 outcome implies no node: the run would stay at `fetch`


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {"node added": _to_start, "implied node added": _to_ask,
                                                      "format lowered": _format_3}
# The edits that change the state the ledger rebuilds (the others only change bytes).
CHANGES_STATE = {"node added", "format lowered"}


def _edited(root: Path, run_id: str, edit: str) -> list[dict[str, Any]]:
    records = read_records(ledger_path(root, run_id))
    EDITS[edit](records[OUTCOME_SEQ - 1])
    return records


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_outcome_breaks_its_hash(demo: tuple[Path, str], edit: str) -> None:
    root, run_id = demo
    write_records(ledger_path(root, run_id), _edited(root, run_id, edit))
    report = verify_run(root, run_id)
    assert "record_hash_mismatch" in problem_types(report)
    assert next(p for p in report.problems if p.type == "record_hash_mismatch").seq == OUTCOME_SEQ


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_outcome_rehashed_with_its_chain(demo: tuple[Path, str], edit: str) -> None:
    """Hashes recomputed, the stored state digests left as they were (the forger cannot guess the
    state without replaying): the next digest catches a state change; the checkpoint catches the rest."""
    root, run_id = demo
    write_records(ledger_path(root, run_id), rehash(_edited(root, run_id, edit)))
    report = verify_run(root, run_id)
    found = problem_types(report)
    assert not report.ok
    if edit in CHANGES_STATE:
        mismatch = next(p for p in report.problems if p.type == "state_digest_mismatch")
        # The first record after the edit that carries a digest: the wait's, seq 6.
        assert mismatch.seq == 6
    assert "checkpoint_head_mismatch" in found


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_outcome_with_every_digest_recomputed_contradicts_the_checkpoint(demo: tuple[Path, str],
                                                                                    edit: str) -> None:
    root, run_id = demo
    write_records(ledger_path(root, run_id), rechain(_edited(root, run_id, edit)))
    report = verify_run(root, run_id)
    assert "state_digest_mismatch" not in problem_types(report)  # the forged digests are the forged states'
    assert "checkpoint_head_mismatch" in problem_types(report)


def _rechained_and_read(root: Path, run_id: str, edit: str) -> tuple[bool, str, str]:
    """The ledger edited, its chain and checkpoint made to agree: whether it verifies, the node
    ``state_at`` of the outcome finds, and the run's status."""
    records = rechain(_edited(root, run_id, edit))
    point_checkpoint_at(root, run_id, records)
    ok = verify_run(root, run_id).ok
    store, runtime = open_demo(root)
    try:
        return ok, runtime.state_at(run_id, OUTCOME_SEQ).run.current_node, runtime.get_state(run_id).status.value
    finally:
        store.close()


def test_an_outcome_that_names_its_implied_node_is_not_an_edit(demo: tuple[Path, str]) -> None:
    """Writers may still write the implied node: a ledger written so (chain and checkpoint made to
    agree) verifies, and the run is where it was."""
    assert _rechained_and_read(*demo, "implied node added") == (True, "ask", "completed")


def test_a_forged_node_moves_the_rebuilt_run(demo: tuple[Path, str]) -> None:
    """The chain and checkpoint forged to agree (no signature, no published head): the ledger is
    believed, and the node a forged delta names is where a reader finds the run — which is why a
    ledger that must hold against its owner is signed (docs/provenance.md)."""
    ok, node, _ = _rechained_and_read(*demo, "node added")
    assert ok and node == "start"


def test_a_pending_effect_that_is_no_object_is_unreplayable_not_a_crash(demo: tuple[Path, str]) -> None:
    """The implied changes of the records after it read the pending effect as an object: a delta
    that makes it anything else is refused where it stands (re-hashed with the chain after it)."""
    from abstractruntime.core.errors import CorruptRecordError

    root, run_id = demo
    records = read_records(ledger_path(root, run_id))
    records[1].setdefault("delta", {})["pending"] = ["not", "an", "effect"]  # seq 2, a node step
    write_records(ledger_path(root, run_id), rehash(records))
    report = verify_run(root, run_id)
    unreplayable = next(p for p in report.problems if p.type == "unreplayable")
    assert unreplayable.seq == 2 and "pending" in unreplayable.message
    store, runtime = open_demo(root)
    try:
        with pytest.raises(CorruptRecordError, match="pending"):
            runtime.state_at(run_id, 3)
        assert len(store.ledger.list(run_id)) == len(records)  # the records are still shown as they are
    finally:
        store.close()
