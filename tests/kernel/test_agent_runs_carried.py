"""An agent's run — its conversation stored once, extended by its tail — is carried whole by every
path that reads or moves runs: ``state_at`` at any position, a rebuild from the ledger alone,
the HTML report, ``store copy`` to PostgreSQL and back, the PostgreSQL store itself, ``list()``
in the dicts upstream 0.0.1 read, and snapshots (a fork, a restore in place).

The run: 200 turns, each appending the model's 1 KB reply (every 40th carries an API key,
redacted in the ledger) to ``vars["messages"]`` and calling the model with all of it, ticked a
few steps at a time; it then waits for the user, so its secret values are still kept.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from abstractruntime.core.jcs import jcs
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

TURNS = 200
SIZE = 1024


def agent(turns: int = TURNS) -> WorkflowSpec:
    def loop(run: Any, ctx: Any) -> StepPlan:
        messages = run.vars["messages"]
        if "reply" in run.vars:
            messages.append(run.vars["reply"])
        if len(messages) - 1 >= run.vars.get("turns", turns):
            return StepPlan("loop", effect=Effect(EffectType.ASK_USER, {"prompt": "More?"}, result_key="more"),
                            next_node="more")
        return StepPlan("loop", effect=Effect(EffectType.LLM_CALL, {"messages": messages}, result_key="reply"),
                        next_node="loop")

    def more(run: Any, ctx: Any) -> StepPlan:
        run.vars["turns"] = run.vars.get("turns", turns) + int(run.vars["more"]["answer"])
        run.vars.pop("more")
        return StepPlan("more", next_node="loop")

    return WorkflowSpec("agent", "loop", {"loop": loop, "more": more})


def model(run: Any, effect: Any) -> EffectOutcome:
    count = len(effect.payload["messages"])
    reply: dict[str, Any] = {"role": "assistant", "content": f"Reply to {count} messages."}
    if count % 40 == 0:
        reply["api_key"] = f"sk-live-{count:04d}-abcdefghijklmnop"
    reply["content"] += " " + "x" * (SIZE - len(json.dumps(reply, separators=(",", ":"))) - 1)
    return EffectOutcome.completed(reply)


HANDLERS = {EffectType.LLM_CALL: model}


def drive(store: Any, run_id: str = "agent-1") -> Any:
    rt = store.runtime(effect_handlers=HANDLERS)
    wf = agent()
    rt.start(workflow=wf, vars={"messages": [{"role": "user", "content": "Go."}]}, run_id=run_id)
    while True:
        state = rt.tick(workflow=wf, run_id=run_id, max_steps=17)
        if state.status.value != "running":
            return state


@pytest.fixture(scope="module")
def agent_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, Any]]:
    """A folder store holding the 200-turn run (waiting for the user), and its live state."""
    root = tmp_path_factory.mktemp("agent") / "store"
    store = FileStore(root, durability="none")
    try:
        state = drive(store)
    finally:
        store.close()
    assert state.status.value == "waiting"
    assert len(state.vars["messages"]) == TURNS + 1
    yield root, "agent-1", state


def _vars(store: Any, run_id: str) -> bytes:
    return jcs(store.runtime().get_state(run_id).vars)


def test_the_run_is_stored_once(agent_run: tuple[Path, str, Any]) -> None:
    root, run_id, state = agent_run
    conversation = len(json.dumps(state.vars["messages"], separators=(",", ":")))
    ledger = (root / "runs" / run_id / "ledger.jsonl").stat().st_size
    assert ledger < 2.2 * conversation, (ledger, conversation)
    assert b"sk-live-" not in (root / "runs" / run_id / "ledger.jsonl").read_bytes()


def test_state_at_every_turn_and_a_rebuild_from_the_ledger_alone(agent_run: tuple[Path, str, Any],
                                                                  tmp_path: Path) -> None:
    root, run_id, state = agent_run
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    store = FileStore(copy, durability="none")
    try:
        rt = store.runtime()
        final = state.vars["messages"]
        records = rt.get_ledger(run_id)
        intents = [r for r in records if r["kind"] == "effect" and r["status"] == "started"
                   and r["effect"]["type"] == "llm_call"]
        assert len(intents) == TURNS
        for rec in intents[::23] + intents[-1:]:
            at = rt.state_at(run_id, rec["seq"]).run.vars["messages"]
            # The n-th model call sees the first n messages of the final conversation, keys real.
            assert jcs(at) == jcs(final[:rec["effect_id"]])
            # list() shows the same conversation in the effect it called (secrets shown redacted).
            shown = rec["effect"]["payload"]["messages"]
            assert [m["content"] for m in shown] == [m["content"] for m in final[:rec["effect_id"]]]
        assert _vars(store, run_id) == jcs(state.vars)
        (copy / "runs" / run_id / "run.json").unlink()
        (copy / "runs" / run_id / "anchors.jsonl").unlink(missing_ok=True)
    finally:
        store.close()
    store = FileStore(copy, durability="none")
    try:
        assert _vars(store, run_id) == jcs(state.vars)  # rebuilt from the ledger alone
        assert verify_run(store, run_id).ok
    finally:
        store.close()


def test_the_report_shows_the_run_verified(agent_run: tuple[Path, str, Any]) -> None:
    import re

    from abstractruntime.report import build_report

    root, run_id, state = agent_run
    store = FileStore(root, durability="none")
    try:
        html = build_report(store, run_id)
        store_records = [r for r in store.ledger.list(run_id) if (r.get("effect") or {}).get("type") == "llm_call"]
        rows = len(store.ledger.list(run_id))
    finally:
        store.close()
    assert 'data-ok="true"' in html
    # The conversation is shown once, each turn its new message: the page grows like the ledger.
    ledger = (root / "runs" / run_id / "ledger.jsonl").stat().st_size
    assert len(html.encode()) < 5 * ledger, (len(html.encode()), ledger)
    payload = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S)[1])  # type: ignore[index]
    assert len(payload["rows"]) == rows
    assert "sk-live-" not in html  # from redacted values only
    # Every model call, with the conversation it was given.
    calls = [row for row in payload["rows"] if row.get("etype") == "llm_call" and "eff" in row]
    assert {row["seq"] for row in calls} >= {r["seq"] for r in store_records if r["status"] == "started"}
    last = max(calls, key=lambda row: row["seq"])
    assert last["sum"].startswith(f"LLM call, {TURNS} message(s): Reply to {TURNS - 1} messages.")
    shown = last["eff"]["payload"]["messages"]
    # The previous model call showed the rest.
    assert len(shown) == 2 and shown[0].endswith(" items as shown at seq " + str(last["seq"] - 2) + " …")


def test_store_copy_to_postgresql_and_back_and_the_run_goes_on_there(agent_run: tuple[Path, str, Any],
                                                                     postgres_url: str, tmp_path: Path) -> None:
    from abstractruntime.storage.postgres.copy import copy_store
    from abstractruntime.storage.postgres.store import PostgresStore

    root, run_id, state = agent_run
    folder = FileStore(root, durability="none")
    pg = PostgresStore(postgres_url, schema=f"t_{uuid.uuid4().hex[:16]}")
    back = FileStore(tmp_path / "back", durability="none")
    try:
        assert copy_store(folder, pg).copied == [run_id]
        hashes = [r["record_hash"] for r in folder.ledger.list(run_id)]
        assert [r["record_hash"] for r in pg.ledger.list(run_id)] == hashes
        assert _vars(pg, run_id) == jcs(state.vars)  # secret values carried with the run
        assert copy_store(pg, back).copied == [run_id]
        assert (tmp_path / "back" / "runs" / run_id / "ledger.jsonl").read_bytes() == \
            (root / "runs" / run_id / "ledger.jsonl").read_bytes()
        assert _vars(back, run_id) == jcs(state.vars)
        assert verify_run(back, run_id).ok
        # The copy goes on in PostgreSQL: ten more turns, each extending the stored conversation.
        rt = pg.runtime(effect_handlers=HANDLERS)
        wf = agent()
        before = pg.ledger.head(run_id).seq
        after = rt.resume(workflow=wf, run_id=run_id, wait_key=state.waiting.wait_key, payload={"answer": 10})
        assert after.status.value == "waiting" and len(after.vars["messages"]) == TURNS + 11
        added = [r["stored"] for r in pg.ledger.list(run_id) if r["seq"] > before]
        assert sum(len(jcs(doc)) for doc in added) < 10 * (SIZE + 1100)
    finally:
        back.close()
        pg.close()
        folder.close()


def test_postgresql_runs_the_agent_loop_as_the_folder_does(agent_run: tuple[Path, str, Any], postgres_url: str) -> None:
    from abstractruntime.storage.postgres.store import PostgresStore

    _, run_id, state = agent_run
    pg = PostgresStore(postgres_url, schema=f"t_{uuid.uuid4().hex[:16]}")
    try:
        got = drive(pg, run_id)
        assert jcs(got.vars) == jcs(state.vars)
        lines = sum(len(jcs(r["stored"])) for r in pg.ledger.list(run_id))
        conversation = len(json.dumps(state.vars["messages"], separators=(",", ":")))
        assert lines < 2.2 * conversation, (lines, conversation)
        assert _vars(pg, run_id) == jcs(state.vars)
    finally:
        pg.close()


def test_list_gives_upstream_dicts_with_the_conversation_resolved(agent_run: tuple[Path, str, Any]) -> None:
    root, run_id, state = agent_run
    store = FileStore(root, durability="none")
    try:
        records = store.runtime().get_ledger(run_id)
    finally:
        store.close()
    effects = [r for r in records if r["effect_id"] is not None]
    assert len(effects) >= 2 * TURNS
    for record in records:
        assert {"effect", "status", "attempt", "idempotency_key", "result", "record_hash", "prev_hash"} <= set(record)
    for record in effects:
        # Outcomes store neither their effect nor their key: list() gives both, as 0.0.1 did.
        assert isinstance(record["effect"]["type"], str) and record["effect"]["type"] in ("llm_call", "ask_user")
        assert isinstance(record["idempotency_key"], str) and len(record["idempotency_key"]) == 32
        assert isinstance(record["attempt"], int)
    final = state.vars["messages"]
    for record in effects:
        if record["effect"]["type"] == "llm_call":
            shown = record["effect"]["payload"]["messages"]
            assert len(shown) == record["effect_id"]
            assert shown[-1]["content"] == final[record["effect_id"] - 1]["content"]
            if record["status"] == "completed":
                assert record["result"]["content"] == final[record["effect_id"]]["content"]
    assert len({r["idempotency_key"] for r in effects}) == len({r["effect_id"] for r in effects})


def test_a_snapshot_forks_and_restores_the_conversation_without_copying_it_again(
        agent_run: tuple[Path, str, Any], tmp_path: Path) -> None:
    from abstractruntime import fork_snapshot, restore_snapshot, take_snapshot

    root, run_id, state = agent_run
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    store = FileStore(copy, durability="none")
    try:
        rt = store.runtime(effect_handlers=HANDLERS)
        wf = agent()
        snapshot = take_snapshot(rt, run_id, name="before-more")
        store.snapshots.save(snapshot)
        conversation = len(json.dumps(state.vars["messages"], separators=(",", ":")))
        # A fork is a new run: its first record defines the conversation once, and it goes on.
        fork = fork_snapshot(rt, snapshot, workflow=wf, run_id="agent-fork")
        assert _vars(store, fork) == jcs(state.vars)
        first = (copy / "runs" / fork / "ledger.jsonl").stat().st_size
        assert first < 1.2 * conversation, (first, conversation)
        waiting = rt.get_state(fork).waiting
        after = rt.resume(workflow=wf, run_id=fork, wait_key=waiting.wait_key, payload={"answer": 5})
        assert len(after.vars["messages"]) == TURNS + 6
        grown = (copy / "runs" / fork / "ledger.jsonl").stat().st_size - first
        assert grown < 5 * (2 * SIZE + 1200), grown
        assert verify_run(store, fork).ok
        # The source goes on, then is restored in place: the restore record refers to the
        # conversation the run stored, it does not write it again.
        waiting = rt.get_state(run_id).waiting
        rt.resume(workflow=wf, run_id=run_id, wait_key=waiting.wait_key, payload={"answer": 3})
        before = (copy / "runs" / run_id / "ledger.jsonl").stat().st_size
        restored = restore_snapshot(rt, snapshot, workflow=wf)
        assert jcs(restored.vars) == jcs(state.vars)
        assert (copy / "runs" / run_id / "ledger.jsonl").stat().st_size - before < 4 * SIZE
        assert _vars(store, run_id) == jcs(state.vars)
        assert verify_run(store, run_id).ok
    finally:
        store.close()
    store = FileStore(copy, durability="none")
    try:
        (copy / "runs" / run_id / "run.json").unlink()
        (copy / "runs" / fork / "run.json").unlink()
        assert _vars(store, run_id) == jcs(state.vars)  # both rebuilt from their ledgers alone
        assert jcs(store.runtime().get_state(fork).vars["messages"][:TURNS + 1]) == jcs(state.vars["messages"])
    finally:
        store.close()
