"""In-flight slots (lock files, advisory locks), the live side channel, and observers that misbehave."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.errors import InvalidInputError
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan
from abstractruntime.core.observe import InFlightLimits, LocalSlots, check_limits
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime import current_effect
from abstractruntime.equip import equip, parse_limits
from abstractruntime.storage.live import FileLiveChannel, FileLiveReader
from abstractruntime.storage.postgres.live import pieces
from abstractruntime.storage.slots import FileSlots
from abstractruntime.storage.store import FileStore


def test_file_slots_hold_at_most_the_limit_and_free_on_release(tmp_path: Path) -> None:
    slots = FileSlots(tmp_path)
    a, b = slots.try_acquire("llm:x", 2), slots.try_acquire("llm:x", 2)
    assert a is not None and b is not None
    assert slots.try_acquire("llm:x", 2) is None
    assert slots.try_acquire("llm:other key/with:odd chars", 1) is not None  # keys are independent
    slots.release(a)
    c = slots.try_acquire("llm:x", 2)
    assert c is not None and slots.try_acquire("llm:x", 2) is None
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (tmp_path / "slots").rglob("*.lock"))


HOLDER = textwrap.dedent('''
    import sys, time
    from abstractruntime.storage.slots import FileSlots
    handle = FileSlots(sys.argv[1]).try_acquire("llm:x", 1)
    print("held" if handle is not None else "busy", flush=True)
    time.sleep(60)
''')


def test_a_slot_held_by_a_killed_process_is_free_at_once(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert FileSlots(tmp_path).try_acquire("llm:x", 1) is None  # another process holds it
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        assert FileSlots(tmp_path).try_acquire("llm:x", 1) is not None
    finally:
        if holder.poll() is None:
            holder.kill()


def test_in_flight_limits_wait_for_a_free_slot(tmp_path: Path) -> None:
    limits = InFlightLimits({"k": 2}, FileSlots(tmp_path))
    inside, peak, guard = [0], [0], threading.Lock()

    def work() -> None:
        with limits.slot("k"):
            with guard:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.05)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] == 2
    with limits.slot("unlimited"):  # a key without a limit never waits
        pass


def test_local_slots_and_limit_parsing() -> None:
    local = LocalSlots()
    assert local.try_acquire("k", 1) == "k" and local.try_acquire("k", 1) is None
    local.release("k")
    assert local.try_acquire("k", 1) == "k"
    assert parse_limits(["llm:a=2,llm:b=4", "llm:c=1"]) == {"llm:a": 2, "llm:b": 4, "llm:c": 1}
    for bad in (["llm:a"], ["llm:a=0"], ["=3"], ["llm:a=two"]):
        with pytest.raises(InvalidInputError):
            parse_limits(bad)
    with pytest.raises(InvalidInputError):
        check_limits({"k": True})


def test_the_postgresql_slots_are_shared_and_freed_with_the_session(postgres_url: str) -> None:
    import uuid

    from abstractruntime.storage.postgres.slots import PostgresSlots
    from abstractruntime.storage.postgres.store import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:12]}"
    one, two = PostgresStore(postgres_url, schema=schema), PostgresStore(postgres_url, schema=schema)
    try:
        a, b = PostgresSlots(one.db), PostgresSlots(two.db)
        first = a.try_acquire("llm:x", 2)
        second = b.try_acquire("llm:x", 2)
        assert first is not None and second is not None
        assert a.try_acquire("llm:x", 2) is None and b.try_acquire("llm:x", 2) is None
        assert a.try_acquire("llm:y", 1) is not None
        a.release(first)
        third = b.try_acquire("llm:x", 2)
        assert third is not None
        second[0].close()  # the session holding a slot goes away: the server frees the slot
        deadline = time.monotonic() + 10
        while a.try_acquire("llm:x", 2) is None:  # as soon as its backend has exited
            assert time.monotonic() < deadline, "the slot of a closed session was never freed"
            time.sleep(0.05)
    finally:
        one.close()
        two.close()


def test_the_live_file_holds_one_attempt_and_the_reader_follows_it(tmp_path: Path) -> None:
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    channel = FileLiveChannel(tmp_path)
    reader = FileLiveReader(channel.path("r1"))
    assert reader.read() == []
    token = channel.effect_started("r1", 1, "llm_call", 1, "ask")
    channel.progress("r1", 1, 1, {"text": "Hello "})
    channel.progress("r1", 1, 1, {"text": "world"})
    assert [e["text"] for e in reader.read()] == ["Hello ", "world"]
    channel.effect_ended(token, "completed", None, None)
    assert reader.read() == [{"effect_id": 1, "attempt": 1, "done": True, "status": "completed"}]
    channel.progress("r1", 2, 1, {"text": "next"})  # the next attempt starts the file over
    assert [e.get("text") for e in reader.read()] == ["next"]
    assert len(channel.path("r1").read_text().splitlines()) == 1
    assert channel.path("r1").stat().st_mode & 0o777 == 0o600
    with pytest.raises(InvalidInputError):
        channel.path("../escape")


def test_notify_pieces_stay_under_the_payload_limit() -> None:
    text = "é" * 5000 + "x" * 4000 + "😀" * 1000
    cut = pieces(text)
    assert "".join(cut) == text
    assert all(len(json.dumps({"r": "run", "e": 1, "a": 1, "t": p}, ensure_ascii=False).encode()) < 8000 for p in cut)


class Broken:
    """An observer with a bug in every method."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any) -> Any:
            raise RuntimeError(f"observer bug in {name}")
        return fail


def test_a_broken_observer_never_changes_a_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def streaming(run: RunState, effect: Effect) -> EffectOutcome:
        identity = current_effect()
        assert identity is not None and identity.publishes
        identity.progress({"text": "piece "})
        return EffectOutcome.completed({"content": "done"}, ext={"usage": {"input_tokens": 1, "output_tokens": 1}})

    store = FileStore(tmp_path, durability="none")
    rt = equip(store.runtime(effect_handlers={EffectType.LLM_CALL: streaming}), store)
    rt.observers.insert(0, Broken())
    wf = WorkflowSpec("w", "a", {
        "a": lambda run, ctx: StepPlan("a", effect=Effect(EffectType.LLM_CALL, {"prompt": "x"}, "r"), next_node="b"),
        "b": lambda run, ctx: StepPlan("b", complete_output={"r": run.vars["r"]["content"]})})
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.COMPLETED and state.output == {"r": "done"}
    assert "observer bug" in caplog.text
    # The working observer (the live channel) still got the piece.
    assert "piece" in (tmp_path / "runs" / run_id / "live.jsonl").read_text()


def test_progress_is_redacted_before_any_observer_sees_it(tmp_path: Path) -> None:
    secret = "sk-live-abcdefghijklmnopqrstuvwxyz0123"

    def leaky(run: RunState, effect: Effect) -> EffectOutcome:
        current_effect().progress({"text": f"the key is {secret} "})  # type: ignore[union-attr]
        return EffectOutcome.completed({"content": "ok"})

    store = FileStore(tmp_path, durability="none")
    rt = equip(store.runtime(effect_handlers={EffectType.LLM_CALL: leaky}), store)
    wf = WorkflowSpec("w", "a", {
        "a": lambda run, ctx: StepPlan("a", effect=Effect(EffectType.LLM_CALL, {"prompt": "x"}, "r"), next_node="b"),
        "b": lambda run, ctx: StepPlan("b", complete_output={})})
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    live = (tmp_path / "runs" / run_id / "live.jsonl").read_text()
    assert secret not in live and "[REDACTED]" in live


def test_the_cli_refuses_bad_llm_run_options(tmp_path: Path) -> None:
    binary = str(Path(sys.executable).parent / "abstractruntime")
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(tmp_path / "none")}
    for args in (["--max-in-flight", "llm:x=zero", "runs", "list"], ["--prices", str(tmp_path / "no.toml"),
                                                                      "runs", "list"]):
        proc = subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr


def test_watch_shows_no_terminal_control_characters() -> None:
    import abstractruntime.cli.main  # noqa: F401  (the commands register in their order first)
    from abstractruntime.cli.cmd_watch import printable

    assert printable("ok\x1b]0;owned\x07 line\nnext\tcol\x9b31m") == "ok\ufffd]0;owned\ufffd line\nnext\tcol\ufffd31m"


def test_budgets_and_reports_stay_within_what_a_record_can_carry() -> None:
    from abstractruntime.core.budget import check_budget
    from abstractruntime.core.usage_totals import usage_numbers

    with pytest.raises(InvalidInputError, match="too large"):
        check_budget({"tokens": 2**60})
    with pytest.raises(InvalidInputError, match="too large"):
        usage_numbers({"input_tokens": 2**60})
    assert check_budget({"tokens": 2**53 - 1}) == {"tokens": 2**53 - 1}
