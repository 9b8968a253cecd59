"""The library side of snapshots and secrets: pins, their grace, values inside stored values, rules.

``take_snapshot`` pins the values its state needs — also those inside a large value stored once
in the ledger and referred to — ``delete_snapshot`` lets go of them, a pin whose snapshot was
never saved goes once its grace has passed, and a secret sealed by rules the restoring runtime
does not know is sealed again where it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec, open_store
from abstractruntime.core.clock import FixedClock
from abstractruntime.core.markers import escape
from abstractruntime.core.redaction import Redactor
from abstractruntime.core.restore import delete_snapshot, fork_snapshot, restore_snapshot, take_snapshot
from abstractruntime.core.secret_release import PIN_GRACE
from abstractruntime.core.secret_values import KeepingRedactor

BIG = {"rows": [f"row {i:04d} of a result large enough to be stored once" for i in range(20)],
       "auth": {"access_token": "S3CRET-inside-a-stored-value"}}


def _ask(run: Any, ctx: Any) -> StepPlan:
    run.vars["big"] = BIG
    run.vars["member_no"] = "S3CRET-member-0042"  # secret only by the rules of the runtime that ran it
    return StepPlan("ask", next_node="done", effect=Effect(EffectType.ASK_USER, {"prompt": "go?"}, result_key="a"))


def _done(run: Any, ctx: Any) -> StepPlan:
    return StepPlan("done", complete_output={"token": run.vars["big"]["auth"]["access_token"],
                                             "member_no": run.vars["member_no"]})


FLOW = WorkflowSpec("pins", "ask", {"ask": _ask, "done": _done})
RULES = Redactor(extra_keys=["member_no"])


def _secrets(root: Path, run_id: str) -> list[dict[str, Any]]:
    path = root / "runs" / run_id / "secrets.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _waiting(root: Path, clock: Any = None) -> tuple[Any, Any, str]:
    store = open_store(root)
    runtime = store.runtime(redactor=RULES, **({"clock": clock} if clock is not None else {}))
    run_id = runtime.start(workflow=FLOW, run_id="r1")
    waiting = runtime.tick(workflow=FLOW, run_id=run_id)
    assert waiting.status.value == "waiting"
    return store, runtime, run_id


def _finish(runtime: Any, run_id: str) -> Any:
    wait = runtime.get_state(run_id).waiting
    return runtime.resume(workflow=FLOW, run_id=run_id, wait_key=wait.wait_key, payload={"answer": "yes"})


def test_values_inside_a_stored_value_are_pinned_and_come_back_in_a_fork(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store, runtime, run_id = _waiting(root)
    ledger = (root / "runs" / run_id / "ledger.jsonl").read_bytes()
    assert b'"$val"' in ledger and b"S3CRET" not in ledger  # the big value is stored once, its secret sealed
    snap = take_snapshot(runtime, run_id, name="asked")
    store.snapshots.save(snap)
    assert b"S3CRET" not in store.snapshots.path_for(snap.snapshot_id).read_bytes()
    assert _finish(runtime, run_id).output == {"token": BIG["auth"]["access_token"],
                                               "member_no": "S3CRET-member-0042"}
    kept = json.dumps(_secrets(root, run_id))
    assert "S3CRET-inside-a-stored-value" in kept and "S3CRET-member-0042" in kept
    # A runtime without the rules that sealed member_no forks and restores without leaking it.
    plain = store.runtime()
    fork_id = fork_snapshot(plain, snap, run_id="f1")
    assert plain.get_state(fork_id).vars["big"] == BIG and plain.get_state(fork_id).vars["member_no"] == \
        "S3CRET-member-0042"
    restore_snapshot(plain, snap)
    for name in (run_id, fork_id):
        assert b"S3CRET" not in (root / "runs" / name / "ledger.jsonl").read_bytes(), name
    assert plain.reveal(fork_id, "vars.member_no") == "S3CRET-member-0042"
    assert plain.shown_checkpoint(fork_id).run.vars["member_no"] == "[REDACTED]"
    # The fork's values are its own (committed under its key), not its source's.
    assert {e["key"] for e in _secrets(root, fork_id) if "key" in e} != {e["key"] for e in _secrets(root, run_id)
                                                                         if "key" in e}
    assert delete_snapshot(plain, store.snapshots, snap.snapshot_id) is True
    assert delete_snapshot(plain, store.snapshots, snap.snapshot_id) is False
    assert _secrets(root, run_id) != []  # restored in place: the run waits again and needs them
    store.close()


def test_a_pin_whose_snapshot_was_never_saved_goes_after_its_grace(tmp_path: Path) -> None:
    root = tmp_path / "store"
    clock = FixedClock("2030-01-01T00:00:00+00:00")
    store, runtime, run_id = _waiting(root, clock)
    take_snapshot(runtime, run_id, name="never saved")  # pinned, then the process "crashed"
    _finish(runtime, run_id)
    assert [e for e in _secrets(root, run_id) if "pin" in e]  # within the grace: kept
    clock.advance(seconds=PIN_GRACE.total_seconds() + 1)
    runtime.get_checkpoint(run_id)
    assert _secrets(root, run_id) == []
    store.close()


def test_a_saved_snapshot_keeps_its_pin_past_the_grace(tmp_path: Path) -> None:
    root = tmp_path / "store"
    clock = FixedClock("2030-01-01T00:00:00+00:00")
    store, runtime, run_id = _waiting(root, clock)
    store.snapshots.save(take_snapshot(runtime, run_id, name="saved"))
    _finish(runtime, run_id)
    clock.advance(seconds=PIN_GRACE.total_seconds() * 10)
    runtime.get_checkpoint(run_id)
    assert runtime.release_finished_secrets() == []
    assert "S3CRET-member-0042" in json.dumps(_secrets(root, run_id))
    store.close()


def test_the_keeping_redactor_seals_known_secrets_where_they_still_are() -> None:
    known = [(("cfg", "member"), "m-1", "[REDACTED]"), (("odd", "x"), "v", "[REDACTED]"), (("gone",), "old", "x")]
    keeping = KeepingRedactor(Redactor(), known)
    redacted, found = keeping.redact_at(["cfg"], {"member": "m-1", "password": "pw", "n": 1})
    assert redacted == {"member": "[REDACTED]", "password": "[REDACTED]", "n": 1}
    assert sorted(found) == [(("member",), "m-1"), (("password",), "pw")]
    # Through a user object that uses marker keys (stored wrapped in $lit).
    lit = escape({"$v": 1, "x": "v"})
    redacted, found = keeping.redact_at(["odd"], lit)
    assert redacted == {"$lit": {"$v": 1, "x": "[REDACTED]"}} and found == [(("$lit", "x"), "v")]
    # A value the run changed since is judged by the rules alone.
    assert keeping.redact_at(["gone"], "new") == ("new", [])
