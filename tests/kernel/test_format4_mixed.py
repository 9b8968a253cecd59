"""Format 4 after format 3, and a writer killed between an intent and its outcome.

A run begun by a format-3 writer (the writer's format pinned to 3, as the previous release wrote)
and killed with SIGKILL inside its effect's handler — its intent durable, its outcome not —
is resumed by this release: the attempt is made again (a format-4 intent taking its next node
from the format-3 one), the outcome is format 4, names no node, and the run is at the node the
first intent named. The same with a format-4 writer killed at the same place; both on the file
store and on PostgreSQL. The recorded sample runs (format 3) go on in format 4 and verify; a
format-5 record is refused. Every ledger here is also checked by the independent verifier
(tests/provenance/independent_verifier.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "provenance"))
from independent_verifier import nodes as independent_nodes  # noqa: E402
from independent_verifier import verify_lines as independent_verify  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _plan(run: Any, ctx: Any) -> StepPlan:
    run.vars["planned"] = True
    return StepPlan("plan", next_node="call")


def _call(run: Any, ctx: Any) -> StepPlan:
    return StepPlan("call", effect=Effect(EffectType.LLM_CALL, {"prompt": "hi"}, result_key="reply"),
                    next_node="check")


def _check(run: Any, ctx: Any) -> StepPlan:
    return StepPlan("check", effect=Effect(EffectType.ASK_USER, {"prompt": "ok?"}, result_key="answer"),
                    next_node="done")


def _done(run: Any, ctx: Any) -> StepPlan:
    return StepPlan("done", complete_output={"answer": run.vars["answer"]})


WORKFLOW = WorkflowSpec("mixed", "plan", {"plan": _plan, "call": _call, "check": _check, "done": _done})

# The killed writer: this module's workflow, a handler that kills its own process (SIGKILL: no
# cleanup, no flush), and the record format pinned when asked.
CHILD = """
import os, signal, sys
sys.path.insert(0, {here!r})
if sys.argv[1] == "3":
    import abstractruntime.core.session as session
    session.RECORD_FORMAT = 3  # the previous release's writer
from abstractruntime.core.models import EffectType
from test_format4_mixed import WORKFLOW, open_backend

def die(run, effect):
    os.kill(os.getpid(), signal.SIGKILL)

store = open_backend(sys.argv[2], sys.argv[3], sys.argv[4])
rt = store.runtime(effect_handlers={{EffectType.LLM_CALL: die}})
rt.start(workflow=WORKFLOW, run_id="victim")
rt.tick(workflow=WORKFLOW, run_id="victim")
"""


def open_backend(backend: str, where: str, schema: str = "") -> Any:
    """A file store at ``where``, or a PostgreSQL store at the URL ``where`` in ``schema``."""
    if backend == "files":
        return FileStore(where, durability="fsync")
    from abstractruntime.storage.postgres.store import PostgresStore

    return PostgresStore(where, schema=schema)


def _lines(root: Path, run_id: str) -> list[bytes]:
    return (root / "runs" / run_id / "ledger.jsonl").read_bytes().splitlines(keepends=True)


def _store_lines(store: Any, run_id: str) -> list[bytes]:
    if isinstance(store, FileStore):
        return _lines(store.root, run_id)
    return [line + b"\n" for line in store.ledger.lines(run_id)]


def _verify(store: Any, run_id: str) -> Any:
    if isinstance(store, FileStore):
        return verify_run(store.root, run_id)
    from abstractruntime.storage.postgres.verify import verify_run as pg_verify_run

    return pg_verify_run(store, run_id)


def _check_store(store: Any, run_id: str) -> list[dict[str, Any]]:
    """The ledger verifies (package and independent code), and ``state_at`` every record is at
    the node the independent reader finds there."""
    lines = _store_lines(store, run_id)
    ok, _, message = independent_verify(lines)
    assert ok, message
    report = _verify(store, run_id)
    assert report.ok, [(p.type, p.message) for p in report.problems]
    found = independent_nodes(lines)
    rt = store.runtime()
    assert [rt.state_at(run_id, seq).run.current_node for seq in range(1, len(lines) + 1)] == found
    return [json.loads(line) for line in lines]


def _check_ledger(root: Path, run_id: str) -> list[dict[str, Any]]:
    store = FileStore(root, durability="none")
    try:
        return _check_store(store, run_id)
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["files", "postgres"])
@pytest.mark.parametrize("first_format", [3, 4])
def test_killed_between_intent_and_outcome_resumes_at_the_named_node(tmp_path: Path, first_format: int, backend: str,
                                                                      request: pytest.FixtureRequest) -> None:
    where = str(tmp_path / "store") if backend == "files" else request.getfixturevalue("postgres_url")
    schema = f"format4kill{first_format}"
    child = subprocess.run([sys.executable, "-c", CHILD.format(here=str(Path(__file__).parent)), str(first_format),
                            backend, where, schema], capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    store = open_backend(backend, where, schema)
    try:
        before = [json.loads(line) for line in _store_lines(store, "victim")]
        intent = before[-1]
        assert (intent["kind"], intent["status"], intent["next_node"]) == ("effect", "started", "check")
        assert {doc["format"] for doc in before} == {first_format}
        rt = store.runtime(effect_handlers={EffectType.LLM_CALL: lambda run, effect: EffectOutcome.completed(
            {"content": "fine"})})
        state = rt.tick(workflow=WORKFLOW, run_id="victim")
        assert (state.status.value, state.current_node) == ("waiting", "check")
        docs = _check_store(store, "victim")
        # The interrupted attempt is made again: a second intent, which takes its node, effect and
        # next node from the pending effect the first one (of either format) left; then the outcome.
        again, outcome = docs[len(before)], docs[len(before) + 1]
        assert (again["format"], again["kind"], again["status"], again["effect_id"], again["attempt"]) == \
            (4, "effect", "started", intent["effect_id"], 2)
        assert "next_node" not in again and "node_id" not in again
        assert (outcome["format"], outcome["kind"], outcome["status"], outcome["effect_id"]) == \
            (4, "effect", "completed", intent["effect_id"])
        assert "current_node" not in outcome.get("delta", {})  # implied by the intent, whatever its format
        assert rt.state_at("victim", outcome["seq"]).run.current_node == "check"
        state = rt.resume(workflow=WORKFLOW, run_id="victim", wait_key=state.waiting.wait_key,
                          payload={"answer": "yes"})
        assert state.status.value == "completed" and state.output == {"answer": {"answer": "yes"}}
        assert state.vars["reply"] == {"content": "fine"}
        docs = _check_store(store, "victim")
        assert [d["format"] for d in docs] == [first_format] * len(before) + [4] * (len(docs) - len(before))
    finally:
        store.close()


def test_a_format_3_writer_names_every_node_it_moves_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pinned writer is a real format-3 writer: its outcomes name their node, and its ledger
    replays to the same run as a format-4 one."""
    import abstractruntime.core.session as session

    def llm(run: Any, effect: Any) -> EffectOutcome:
        return EffectOutcome.completed({"content": "fine"})

    runs = {}
    for fmt in (3, 4):
        monkeypatch.setattr(session, "RECORD_FORMAT", fmt)
        root = tmp_path / f"store{fmt}"
        store = FileStore(root, durability="none")
        try:
            rt = store.runtime(effect_handlers={EffectType.LLM_CALL: llm})
            rt.start(workflow=WORKFLOW, run_id="twin")
            runs[fmt] = rt.tick(workflow=WORKFLOW, run_id="twin")
        finally:
            store.close()
        docs = _check_ledger(root, "twin")
        outcome = next(d for d in docs if d["kind"] == "effect" and d["status"] == "completed")
        assert outcome["format"] == fmt
        assert ("current_node" in outcome.get("delta", {})) is (fmt == 3)
    three, four = (runs[fmt].to_dict() for fmt in (3, 4))
    for doc in (three, four):
        for stamp in ("created_at", "updated_at"):
            doc.pop(stamp)
        doc["waiting"].pop("wait_key")
    assert three == four


def test_the_recorded_sample_runs_go_on_in_format_4(tmp_path: Path) -> None:
    root = tmp_path / "store"
    shutil.copytree(REPO / "sample_runs" / "store", root)
    run_id = "approval-flow-waiting"
    before = [json.loads(line) for line in _lines(root, run_id)]
    assert {d["format"] for d in before} == {3}
    cli = Path(sys.executable).parent / "abstractruntime"
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(root)}
    done = subprocess.run([str(cli), "resume", f"{run_id}@w1", "--answer", "yes", "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    docs = _check_ledger(root, run_id)
    assert [d["format"] for d in docs] == [3] * len(before) + [4] * (len(docs) - len(before))
    assert docs[-1]["kind"] == "complete"


@pytest.mark.parametrize("backend", ["files", "postgres"])
def test_a_format_5_record_is_refused_not_misread(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A record of a newer format, correctly chained, stops every reader (nothing is written)."""
    from abstractruntime.core.errors import UnsupportedFormatError
    from abstractruntime.core.records import seal

    if backend == "files":
        store: Any = FileStore(tmp_path / "store", durability="none")
    else:
        from abstractruntime.storage.postgres.store import PostgresStore

        store = PostgresStore(request.getfixturevalue("postgres_url"), schema="format5")
    try:
        rt = store.runtime(effect_handlers={EffectType.LLM_CALL: lambda run, effect: EffectOutcome.completed({})})
        run_id = rt.start(workflow=WORKFLOW)
        rt.tick(workflow=WORKFLOW, run_id=run_id)
        head = store.ledger.head(run_id)
        doc, line = seal({"format": 5, "seq": head.seq + 1, "kind": "node", "status": "completed",
                          "at": "2030-01-01T00:00:00+00:00", "prev_hash": head.head_hash, "node_id": "check"})
        store.ledger.append_lines(run_id, [doc], [line], expect=head)
        with pytest.raises(UnsupportedFormatError, match="upgrade abstractruntime"):
            store.ledger.list(run_id)
        with pytest.raises(UnsupportedFormatError):
            store.runtime().tick(workflow=WORKFLOW, run_id=run_id)
        assert store.ledger.head(run_id).seq == head.seq + 1  # nothing written after it
        if backend == "files":
            assert "unsupported_format" in {p.type for p in verify_run(store, run_id).problems}
    finally:
        store.close()
