"""The checkpoint record: the state's digest is added to the last queued record by sealing it again
from the members it was encoded into; what is stored must be what a full seal gives, proven, and
survive a kill at every write of a run's last tick."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.jcs import jcs
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.records import record_hash3, reseal, seal, seal_pieces
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.core.state import digest_of
from abstractruntime.scheduler.concurrent import advance_many
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

FIELDS: list[dict[str, Any]] = [
    {"format": 3, "seq": 1, "kind": "start", "status": "completed", "at": "2026-01-01T00:00:00+00:00",
     "prev_hash": None, "run_id": "r", "delta": {"vars": [["set", [], {"a": 1.5, "é": [True, None]}]]}},
    {"format": 3, "seq": 7, "kind": "effect", "status": "completed", "at": "x", "prev_hash": "ab" * 32,
     "effect_id": 3, "result": {"content": "ok \u2028 \U0001f600", "n": 2 ** 53 - 1, "f": 1e21}, "ext": {"usage": {"t": 1}}},
    {"format": 3, "seq": 2, "kind": "complete", "status": "completed", "at": "y"},
]


@pytest.mark.parametrize("fields", FIELDS)
@pytest.mark.parametrize("chained", [True, False])
def test_reseal_is_byte_for_byte_a_full_seal(fields: dict[str, Any], chained: bool) -> None:
    doc, line, pieces = seal_pieces(fields, chained=chained)
    assert (doc, line) == seal(fields, chained=chained)
    new_fields, new_doc, new_line, new_pieces = reseal(fields, pieces, "state", "cd" * 32, chained=chained)
    expected_doc, expected_line = seal({**fields, "state": "cd" * 32}, chained=chained)
    assert new_line == expected_line and new_doc == expected_doc
    assert new_line == jcs(new_doc)
    assert new_fields == {**fields, "state": "cd" * 32} and "state" not in fields  # the original is untouched
    assert "state" not in pieces and set(new_pieces) == set(new_fields)
    if chained:
        assert new_doc["record_hash"] == record_hash3(new_doc) != doc["record_hash"]


def _workflow() -> WorkflowSpec:
    return WorkflowSpec("final_ckpt", "call", {
        "call": lambda run, ctx: StepPlan("call", next_node="end", effect=Effect(EffectType.LLM_CALL, {"p": "hi"}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"got": run.vars["r"]["content"]})})


def _llm(run: Any, effect: Effect) -> EffectOutcome:
    return EffectOutcome.completed({"content": "ok"})


def _records(root: Path, run_id: str) -> list[dict[str, Any]]:
    path = root / "runs" / run_id / "ledger.jsonl"
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_the_finished_run_s_checkpoint_is_proven_by_its_last_record(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s", durability="fsync")
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: _llm})
    wf = _workflow()
    run_id = rt.start(workflow=wf, vars={"x": [1, 2]})
    assert rt.tick(workflow=wf, run_id=run_id).output == {"got": "ok"}
    stored = store.runs.load_checkpoint(run_id)
    assert stored is not None
    records = _records(store.root, run_id)
    last = records[-1]
    assert last["seq"] == stored.ledger.seq and last["record_hash"] == stored.ledger.head_hash
    assert last["state"] == digest_of(stored.state)
    assert record_hash3(last) == last["record_hash"]
    assert [r["prev_hash"] for r in records[1:]] == [r["record_hash"] for r in records[:-1]]
    # Only records a checkpoint was stored at carry a digest (the start's and the last one).
    assert [r["seq"] for r in records if "state" in r] == [1, last["seq"]]
    assert verify_run(store.root, run_id).ok
    store.close()


_CHILD = textwrap.dedent("""
    import os, signal, sys, functools
    from abstractruntime.storage.json_files import JsonFileRunStore
    from abstractruntime.storage.ledger_files import JsonlLedgerStore
    from abstractruntime.storage.run_index import RunIndex
    sys.path.insert(0, {tests!r})
    from kernel.test_final_checkpoint import _workflow, _llm
    from abstractruntime.core.models import EffectType
    from abstractruntime.storage.store import FileStore

    limit, count = int(sys.argv[2]), [0]

    def wrap(owner, name):
        original = getattr(owner, name)

        @functools.wraps(original)
        def counted(*args, **kwargs):
            result = original(*args, **kwargs)
            count[0] += 1
            if count[0] == limit:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        setattr(owner, name, counted)

    store = FileStore(sys.argv[1], durability="fsync")
    rt = store.runtime(effect_handlers={{EffectType.LLM_CALL: _llm}})
    run_id = rt.start(workflow=_workflow(), run_id="killed")
    for owner, names in ((JsonlLedgerStore, ("append_lines", "put_secrets")),
                         (JsonFileRunStore, ("save_checkpoint",)), (RunIndex, ("mark", "put", "mark_together", "put_together"))):
        for name in names:
            wrap(owner, name)
    rt.tick(workflow=_workflow(), run_id=run_id)
    print("done", count[0])
""")


def test_a_kill_at_every_write_of_the_last_tick_leaves_a_run_that_finishes_and_verifies(tmp_path: Path) -> None:
    tests = str(Path(__file__).resolve().parents[1])
    script = _CHILD.format(tests=tests)
    writes = None
    n = 1
    while writes is None or n <= writes:
        root = tmp_path / f"k{n}"
        proc = subprocess.run([sys.executable, "-c", script, str(root), str(n)], capture_output=True, text=True,
                              timeout=120)
        if proc.returncode == 0:
            writes = int(proc.stdout.split()[-1])
            assert writes >= 4, proc.stdout  # the run's writes were counted
        else:
            assert proc.returncode == -9, proc.stderr
        store = FileStore(root, durability="fsync")
        rt = store.runtime(effect_handlers={EffectType.LLM_CALL: _llm})
        state = rt.get_state("killed")
        for _ in range(3):
            if state.status.value != "running":
                break
            state = rt.tick(workflow=_workflow(), run_id="killed")
        assert state.output == {"got": "ok"}, (n, state.status, state.error)
        report = verify_run(store.root, "killed")
        assert report.ok, (n, report)
        records = _records(store.root, "killed")
        stored = store.runs.load_checkpoint("killed")
        # The stored checkpoint (it may lag behind the ledger after a kill between the last append
        # and its write: a reader shows the ledger's state) is proven by the record at its position,
        # and the last record — written for a checkpoint — carries a digest too.
        assert stored is not None and records[stored.ledger.seq - 1]["state"] == digest_of(stored.state)
        assert "state" in records[-1] and records[-1]["kind"] == "complete"
        store.close()
        n += 1


async def _quick_llm(run: Any, effect: Effect) -> EffectOutcome:
    await asyncio.sleep(0)
    return EffectOutcome.completed({"content": "ok"})


@pytest.mark.parametrize("after", [0.002, 0.005, 0.01, 0.015, 0.02, 0.03])
def test_a_cancelled_drain_leaves_runs_that_finish_and_verify(tmp_path: Path, after: float) -> None:
    """Cancel many runs in flight ``after`` seconds (the moment only spreads the cancellation over
    the runs' ticks: the open, the intent's batch, the effect, the last batch and its checkpoint;
    nothing here depends on it), then finish them with a new runtime: every ledger verifies, every
    stored checkpoint is proven by the record at its position."""
    store = FileStore(tmp_path / "s", durability="none")
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: _quick_llm})
    wf = _workflow()
    ids = [rt.start(workflow=wf) for _ in range(12)]

    async def drain_then_cancel() -> None:
        task = asyncio.ensure_future(advance_many(rt, [(wf, i) for i in ids], concurrency=12))
        await asyncio.sleep(after)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(drain_then_cancel())
    store.close()
    store = FileStore(tmp_path / "s", durability="none")
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: _quick_llm})
    result = asyncio.run(advance_many(rt, [(wf, i) for i in ids], concurrency=12))
    assert not result.errors and not result.locked
    for run_id in ids:
        assert rt.get_state(run_id).output == {"got": "ok"}
        assert verify_run(store.root, run_id).ok
        stored = store.runs.load_checkpoint(run_id)
        assert stored is not None
        assert _records(store.root, run_id)[stored.ledger.seq - 1]["state"] == digest_of(stored.state)
    store.close()
