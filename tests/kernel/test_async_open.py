"""Opening a run under ``atick``: the lock and the open run in a store thread, never on the loop.

A cancellation that arrives while the thread waits for the run's lock (or reads the run) waits
for it, gives the lock back and writes nothing; the store's thread pool still works in a process
forked after it was used.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec, open_store
from abstractruntime.core.drive import store_executor


async def _answer(run: object, effect: Effect) -> EffectOutcome:
    await asyncio.sleep(0)
    return EffectOutcome.completed({"ok": True})


def _flow() -> WorkflowSpec:
    return WorkflowSpec("one_call", "call", {
        "call": lambda run, ctx: StepPlan("call", next_node="end", effect=Effect(EffectType.LLM_CALL, {}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"ok": True}),
    })


def test_atick_opens_the_run_off_the_event_loop(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: _answer})
    run_id = rt.start(workflow=_flow())
    rt._warm.clear()  # a cold open: the checkpoint and the ledger are read
    opened_in: list[str] = []
    original = rt._open

    def spy(*args: object, **kwargs: object) -> object:
        opened_in.append(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    rt._open = spy  # type: ignore[method-assign]
    state = asyncio.run(rt.atick(workflow=_flow(), run_id=run_id))
    assert state.output == {"ok": True}
    assert opened_in and all(name.startswith("abstractruntime-store") for name in opened_in)


def test_a_tick_cancelled_while_it_waits_for_the_lock_gives_it_back_and_writes_nothing(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: _answer})
    run_id = rt.start(workflow=_flow())
    before = store.ledger.list(run_id)
    holder = store.runs.lock(run_id)
    holder.__enter__()

    async def main() -> None:
        task = asyncio.create_task(rt.atick(workflow=_flow(), run_id=run_id, lock_wait=10))
        await asyncio.sleep(0.2)  # the loop is waiting to try the lock again (no thread holds a wait)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        holder.__exit__(None, None, None)

    asyncio.run(main())
    assert store.ledger.list(run_id) == before
    with store.runs.lock(run_id):  # given back: a second writer gets it at once
        pass
    state = asyncio.run(rt.atick(workflow=_flow(), run_id=run_id))
    assert state.output == {"ok": True}


def test_more_ticks_waiting_for_one_run_than_store_threads_all_get_it(tmp_path: Path) -> None:
    """Each tick that finds the run locked waits on the loop, not in a store thread: the writer
    holding the lock still gets the threads its appends need (a wait in the pool would hold every
    thread until the waits ran out, and the ticks would fail with RunLockedError)."""
    from abstractruntime.core import drive

    def spin(run: Any, ctx: Any) -> StepPlan:
        run.vars["i"] = run.vars.get("i", 0) + 1
        return StepPlan("spin", next_node="spin")

    spinner = WorkflowSpec("spinner", "spin", {"spin": spin})
    store = open_store(str(tmp_path))
    rt = store.runtime()
    run_id = rt.start(workflow=spinner)
    ticks = drive.STORE_THREADS + 8

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(rt.atick(workflow=spinner, run_id=run_id, max_steps=20, lock_wait=120)
                                           for _ in range(ticks))))

    states = asyncio.run(main())
    assert sorted(state.vars["i"] for state in states) == [20 * (n + 1) for n in range(ticks)]


def _tick_in_child(root: str, run_id: str, out: "multiprocessing.Queue[object]") -> None:
    store = open_store(root)
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: _answer})
    out.put(asyncio.run(rt.atick(workflow=_flow(), run_id=run_id)).output)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_a_process_forked_after_the_store_pool_ran_ticks_with_a_pool_of_its_own(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: _answer})
    first, second = rt.start(workflow=_flow()), rt.start(workflow=_flow())
    assert asyncio.run(rt.atick(workflow=_flow(), run_id=first)).output == {"ok": True}
    pool = store_executor()
    # Every thread of the pool idle and waiting: a child forked now inherits none of them.
    list(pool.map(time.sleep, [0.0] * 8))
    context = multiprocessing.get_context("fork")
    out: "multiprocessing.Queue[object]" = context.Queue()
    child = context.Process(target=_tick_in_child, args=(str(tmp_path), second, out))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on a thread pool it inherited")
    assert child.exitcode == 0 and out.get(timeout=5) == {"ok": True}
