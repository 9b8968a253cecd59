"""Code-first workflows through the Runtime API: positions, replay, steps, waits, values, failures."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from abstractruntime import NondeterminismError, StepFailedError, current_effect, step, workflow
from abstractruntime.core.clock import FixedClock
from abstractruntime.core.errors import InvalidInputError
from abstractruntime.core.models import EffectType, RunStatus
from abstractruntime.core.policy import DefaultEffectPolicy
from abstractruntime.core.runtime import EffectOutcome

T0 = "2030-01-01T00:00:00+00:00"


def step_a() -> str:
    return "a"


def notify() -> str:
    return "notified"


def _records(rt: Any, run_id: str) -> list[dict[str, Any]]:
    return rt.get_ledger(run_id)


def test_a_step_runs_once_and_its_result_is_replayed_by_position(rt_backend: Any) -> None:
    calls: list[str] = []

    def build(service: str) -> dict[str, Any]:
        calls.append(service)
        return {"image": f"{service}:1", "layers": (1, 2.0)}

    @workflow("deploy")
    def deploy(ctx: Any, service: str) -> dict[str, Any]:
        first = ctx.step(build, service)
        answer = ctx.ask(f"Deploy {service}?", choices=["yes", "no"])
        return {"build": first, "answer": answer}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=deploy, vars={"service": "web"})
    state = rt.tick(workflow=deploy, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting.wait_id == "w2"
    assert state.waiting.prompt == "Deploy web?" and state.waiting.choices == ["yes", "no"]
    state = rt.resume(workflow=deploy, run_id=run_id, wait_id="w2", payload={"answer": "yes"})
    assert state.status is RunStatus.COMPLETED
    # The function saw the step's JSON round trip on its first execution too: the tuple is a
    # list, 2.0 is 2 — the output is what a replay sees.
    assert state.output == {"build": {"image": "web:1", "layers": [1, 2]}, "answer": "yes"}
    assert calls == ["web"]  # run once, replayed on resume
    steps = [r for r in _records(rt, run_id) if r["kind"] == "step"]
    assert [(r["status"], r["effect_id"], r["ext"]["step"]) for r in steps] == [
        ("started", 1, {"name": "test_a_step_runs_once_and_its_result_is_replayed_by_position.<locals>.build"
                        .replace(".<locals>.", "."), "kind": "step"}),
        ("completed", 1, {"name": "test_a_step_runs_once_and_its_result_is_replayed_by_position.build",
                          "kind": "step"})]


def test_the_first_execution_and_a_replay_see_the_same_value(rt_backend: Any) -> None:
    seen: list[Any] = []

    @workflow("same")
    def same(ctx: Any) -> dict[str, Any]:
        value = ctx.step(lambda: {"n": 1.0, "t": (1, 2), "nested": {"x": [1.5e21]}})
        seen.append(value)
        ctx.wait_event("go")
        return {"ok": True}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=same)
    rt.tick(workflow=same, run_id=run_id)
    rt.resume(workflow=same, run_id=run_id, wait_id="w2", payload={"go": 1})
    assert seen[0] == seen[1] == {"n": 1, "t": [1, 2], "nested": {"x": [1.5e21]}}
    assert type(seen[0]["n"]) is type(seen[1]["n"]) is int


def test_recorded_values_are_stable_across_replays(rt_backend: Any) -> None:
    seen: list[tuple[Any, ...]] = []
    clock = FixedClock(T0)

    @workflow("values")
    def values(ctx: Any) -> dict[str, Any]:
        now, uid, rnd = ctx.now(), ctx.uuid(), ctx.random()
        seen.append((now, uid, rnd))
        ctx.wait_event("go")
        return {"now": now.isoformat(), "uuid": str(uid), "random": rnd}

    rt = rt_backend.runtime(clock=clock)
    run_id = rt.start(workflow=values)
    rt.tick(workflow=values, run_id=run_id)
    clock.advance(seconds=3600)
    state = rt.resume(workflow=values, run_id=run_id, wait_id="w4", payload={})
    assert seen[0] == seen[1]
    assert seen[0][0].isoformat() == T0 and seen[0][0].tzinfo is not None
    assert 0.0 <= seen[0][2] < 1.0
    assert state.output["now"] == T0


def test_ask_returns_the_text_or_a_structured_payload(rt_backend: Any) -> None:
    @workflow("asks")
    def asks(ctx: Any) -> dict[str, Any]:
        return {"a": ctx.ask("Name?"), "b": ctx.ask("Details?")}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=asks)
    rt.tick(workflow=asks, run_id=run_id)
    rt.resume(workflow=asks, run_id=run_id, wait_id="w1", payload={"answer": "Ana"})
    state = rt.resume(workflow=asks, run_id=run_id, wait_id="w2", payload={"answer": "x", "extra": 1})
    assert state.output == {"a": "Ana", "b": {"answer": "x", "extra": 1}}


def test_a_retried_answer_to_a_code_first_wait_is_refused(rt_backend: Any) -> None:
    from abstractruntime.core.errors import AlreadyAnsweredError

    @workflow("two_asks")
    def two_asks(ctx: Any) -> dict[str, Any]:
        return {"a": ctx.ask("First?"), "b": ctx.ask("Second?")}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=two_asks)
    rt.tick(workflow=two_asks, run_id=run_id)
    rt.resume(workflow=two_asks, run_id=run_id, wait_id="w1", payload={"answer": "1"})
    before = rt_backend.fingerprint(run_id)
    with pytest.raises(AlreadyAnsweredError):
        rt.resume(workflow=two_asks, run_id=run_id, wait_id="w1", payload={"answer": "again"})
    assert rt_backend.fingerprint(run_id) == before


def test_a_failing_step_is_retried_then_its_failure_is_raised_again_on_replay(rt_backend: Any) -> None:
    attempts: list[int] = []
    caught: list[str] = []

    @step(attempts=3, backoff=0)
    def flaky() -> str:
        attempts.append(current_effect().attempt)  # type: ignore[union-attr]
        raise ValueError("down")

    @workflow("fails")
    def fails(ctx: Any) -> dict[str, Any]:
        try:
            ctx.step(flaky)
        except StepFailedError as exc:
            caught.append(f"{exc.details['exception_type']}:{exc.details['position']}")
        ctx.wait_event("go")
        return {"caught": caught[-1]}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=fails)
    rt.tick(workflow=fails, run_id=run_id)
    assert attempts == [1, 2, 3]
    state = rt.resume(workflow=fails, run_id=run_id, wait_id="w2", payload={})
    assert attempts == [1, 2, 3]  # the final failure is replayed, not run again
    assert caught == ["ValueError:1", "ValueError:1"] and state.output == {"caught": "ValueError:1"}
    failed = [r for r in _records(rt, run_id) if r["kind"] == "step" and r["status"] == "failed"]
    assert [r["ext"]["step"].get("final", False) for r in failed] == [False, False, True]
    assert failed[-1]["error"] == "ValueError: down"


def test_an_uncaught_step_failure_fails_the_run_on_the_record(rt_backend: Any) -> None:
    @workflow("boom")
    def boom(ctx: Any) -> None:
        ctx.step(lambda: 1 / 0)

    rt = rt_backend.runtime(effect_policy=DefaultEffectPolicy(effect_max_attempts={"step": 2},
                                                                default_backoff_base=0))
    run_id = rt.start(workflow=boom)
    state = rt.tick(workflow=boom, run_id=run_id)
    assert state.status is RunStatus.FAILED
    assert "StepFailedError" in state.error and "ZeroDivisionError" in state.error
    assert sum(1 for r in _records(rt, run_id) if r["kind"] == "step" and r["status"] == "failed") == 2


def test_a_step_value_that_json_cannot_hold_is_a_final_failure(rt_backend: Any) -> None:
    @workflow("bad_value")
    def bad_value(ctx: Any) -> dict[str, Any]:
        try:
            ctx.step(lambda: {"handle": object()})
        except StepFailedError as exc:
            return {"error": exc.details["exception_type"]}
        return {}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=bad_value)
    assert rt.tick(workflow=bad_value, run_id=run_id).output == {"error": "InvalidInputError"}


def test_the_function_raising_fails_the_run_and_a_non_dict_return_is_wrapped(rt_backend: Any) -> None:
    @workflow("raises")
    def raises(ctx: Any) -> None:
        raise RuntimeError("bad input")

    @workflow("returns")
    def returns(ctx: Any) -> list[int]:
        return [1, 2]

    rt = rt_backend.runtime()
    failed = rt.tick(workflow=raises, run_id=rt.start(workflow=raises))
    assert failed.status is RunStatus.FAILED and "RuntimeError: bad input" in failed.error
    done = rt.tick(workflow=returns, run_id=rt.start(workflow=returns))
    assert done.output == {"result": [1, 2]}


def test_inputs_are_keyword_arguments_checked_before_a_run_is_created(rt_backend: Any) -> None:
    @workflow("inputs")
    def inputs(ctx: Any, service: str, replicas: int = 1) -> dict[str, Any]:
        return {"service": service, "replicas": replicas}

    rt = rt_backend.runtime()
    with pytest.raises(InvalidInputError, match="takes no input 'colour'"):
        rt.start(workflow=inputs, vars={"service": "web", "colour": "red"}, run_id="bad1")
    with pytest.raises(InvalidInputError, match="needs the input 'service'"):
        rt.start(workflow=inputs, vars={}, run_id="bad2")
    assert not rt.run_exists("bad1") and not rt.run_exists("bad2")
    run_id = rt.start(workflow=inputs, vars={"service": "web", "replicas": 3})
    assert rt.tick(workflow=inputs, run_id=run_id).output == {"service": "web", "replicas": 3}


def test_ctx_inside_a_step_is_refused(rt_backend: Any) -> None:
    @workflow("nested")
    def nested(ctx: Any) -> dict[str, Any]:
        try:
            ctx.step(lambda: ctx.now())
        except StepFailedError as exc:
            return {"error": exc.details["error"]}
        return {}

    rt = rt_backend.runtime()
    output = rt.tick(workflow=nested, run_id=rt.start(workflow=nested)).output
    assert "ctx cannot be used inside a step" in output["error"]


def test_a_plain_workflow_may_not_use_ctx_from_another_thread(rt_backend: Any) -> None:
    @workflow("threads")
    def threads(ctx: Any) -> dict[str, Any]:
        errors: list[str] = []

        def work() -> None:
            try:
                ctx.now()
            except InvalidInputError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        return {"errors": errors}

    rt = rt_backend.runtime()
    output = rt.tick(workflow=threads, run_id=rt.start(workflow=threads)).output
    assert "async def" in output["errors"][0]


def test_async_steps_started_together_take_positions_in_the_order_they_start(rt_backend: Any) -> None:
    started: list[str] = []

    async def slow(name: str, delay: float) -> str:
        started.append(name)
        await asyncio.sleep(delay)
        return name

    @workflow("fan_out")
    async def fan_out(ctx: Any) -> dict[str, Any]:
        results = await asyncio.gather(ctx.step(slow, "a", 0.05), ctx.step(slow, "b", 0.0), ctx.step(slow, "c", 0.02))
        when = await ctx.now()
        answer = await ctx.ask("Go?")
        return {"results": results, "answer": answer, "when": when.isoformat()}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=fan_out)
    state = rt.tick(workflow=fan_out, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting.wait_id == "w5"
    assert started == ["a", "b", "c"]
    done = [r for r in _records(rt, run_id) if r["kind"] == "step" and r["status"] == "completed"
            and r["ext"]["step"]["kind"] == "step"]
    # Positions follow the start order; outcomes landed as the steps finished.
    assert {r["effect_id"]: r["result"] for r in done} == {1: "a", 2: "b", 3: "c"}
    assert [r["result"] for r in done] == ["b", "c", "a"]
    state = rt.resume(workflow=fan_out, run_id=run_id, wait_id="w5", payload={"answer": "yes"})
    assert state.output["results"] == ["a", "b", "c"] and started == ["a", "b", "c"]


def test_async_workflows_run_under_atick_too(rt_backend: Any) -> None:
    @workflow("async_flow")
    async def async_flow(ctx: Any) -> dict[str, Any]:
        value = await ctx.step(lambda: 41)
        await ctx.sleep(0)
        return {"value": value + 1}

    async def main() -> Any:
        rt = rt_backend.runtime()
        run_id = rt.start(workflow=async_flow)
        return await rt.atick(workflow=async_flow, run_id=run_id)

    assert asyncio.run(main()).output == {"value": 42}


def test_a_plain_workflow_runs_under_atick(rt_backend: Any) -> None:
    @workflow("plain_async_driver")
    def plain(ctx: Any) -> dict[str, Any]:
        return {"value": ctx.step(lambda: 7)}

    async def main() -> Any:
        rt = rt_backend.runtime()
        run_id = rt.start(workflow=plain)
        return await rt.atick(workflow=plain, run_id=run_id)

    assert asyncio.run(main()).output == {"value": 7}


def test_llm_tools_job_and_timers_are_the_kernels_effects(rt_backend: Any) -> None:
    clock = FixedClock(T0)
    prompts: list[Any] = []

    def llm(run: Any, effect: Any) -> EffectOutcome:
        prompts.append(effect.payload)
        return EffectOutcome.completed({"content": "summary", "tool_calls": None})

    def tools(run: Any, effect: Any) -> EffectOutcome:
        return EffectOutcome.completed({"mode": "executed", "results": [
            {"call_id": c["call_id"], "success": True, "output": c["name"]} for c in effect.payload["tool_calls"]]})

    @workflow("effects")
    def effects(ctx: Any) -> dict[str, Any]:
        reply = ctx.llm("Summarise", model="m1", temperature=0)
        ran = ctx.tools([{"name": "t", "arguments": {}, "call_id": "c1"}])
        ctx.sleep(60)
        job = ctx.wait_job("j-7")
        ctx.sleep_until("2000-01-01T00:00:00+00:00")  # already due: no wait
        return {"reply": reply["content"], "ran": ran["results"][0]["output"], "job": job}

    rt = rt_backend.runtime(clock=clock, effect_handlers={EffectType.LLM_CALL: llm, EffectType.TOOL_CALLS: tools})
    run_id = rt.start(workflow=effects)
    state = rt.tick(workflow=effects, run_id=run_id)
    assert state.waiting.reason.value == "until" and state.waiting.wait_id == "w3"
    assert state.waiting.until == "2030-01-01T00:01:00+00:00"
    assert prompts == [{"prompt": "Summarise", "params": {"model": "m1", "temperature": 0}}]
    assert rt.tick(workflow=effects, run_id=run_id).status is RunStatus.WAITING  # not due yet
    clock.advance(seconds=61)
    state = rt.tick(workflow=effects, run_id=run_id)
    assert state.waiting.reason.value == "job" and state.waiting.wait_key == "job:j-7"
    state = rt.resume(workflow=effects, run_id=run_id, wait_key="job:j-7", payload={"status": "done"})
    assert state.output == {"reply": "summary", "ran": "t", "job": {"status": "done"}}
    assert len(prompts) == 1  # the LLM was asked once; every later execution replayed its reply


def test_a_child_workflow_runs_as_a_subworkflow(rt_backend: Any) -> None:
    @workflow("child")
    def child(ctx: Any, n: int) -> dict[str, Any]:
        return {"double": ctx.step(lambda: n * 2)}

    @workflow("parent")
    def parent(ctx: Any) -> dict[str, Any]:
        return {"child": ctx.child(child, n=21)}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=parent)
    state = rt.tick(workflow=parent, run_id=run_id)
    assert state.output == {"child": {"double": 42}}
    children = [r for r in _records(rt, run_id) if r["kind"] == "effect" and r["status"] == "completed"]
    sub_run_id = children[0]["result"]["sub_run_id"]
    assert rt.get_state(sub_run_id).parent_run_id == run_id


def test_patched_is_true_for_new_runs_and_false_for_runs_recorded_before(rt_backend: Any) -> None:
    @workflow("evolving")
    def old(ctx: Any) -> dict[str, Any]:
        ctx.step(step_a)
        ctx.wait_event("go")
        return {"path": "old"}

    @workflow("evolving")
    def new(ctx: Any) -> dict[str, Any]:
        if ctx.patched("notify"):
            ctx.step(notify)
        ctx.step(step_a)
        ctx.wait_event("go")
        return {"path": "new" if ctx.patched("notify") else "old"}

    rt = rt_backend.runtime()
    before = rt.start(workflow=old)
    rt.tick(workflow=old, run_id=before)
    after = rt.start(workflow=new)
    rt.tick(workflow=new, run_id=after)
    assert rt.resume(workflow=new, run_id=before, wait_id="w2", payload={}).output == {"path": "old"}
    assert rt.resume(workflow=new, run_id=after, wait_id="w4", payload={}).output == {"path": "new"}
    patches = [r for r in _records(rt, after) if r["kind"] == "patch"]
    assert [(r["effect_id"], r["ext"]) for r in patches] == [(1, {"patch": {"name": "notify", "applied": True}})]
    assert not [r for r in _records(rt, before) if r["kind"] == "patch"]


def test_a_patch_marker_the_code_no_longer_asks_about_is_passed_over(rt_backend: Any) -> None:
    @workflow("patching")
    def with_patch(ctx: Any) -> dict[str, Any]:
        if ctx.patched("v2"):
            ctx.step(notify)
        ctx.wait_event("go")
        return {}

    @workflow("patching")
    def cleaned(ctx: Any) -> dict[str, Any]:
        ctx.step(notify)
        ctx.wait_event("go")
        return {"clean": True}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=with_patch)
    rt.tick(workflow=with_patch, run_id=run_id)
    assert rt.resume(workflow=cleaned, run_id=run_id, wait_id="w3", payload={}).output == {"clean": True}


def test_nondeterministic_code_is_refused_with_nothing_written_and_the_run_blocked(rt_backend: Any) -> None:
    order = ["a", "b"]

    @workflow("flaky_code")
    def flaky_code(ctx: Any) -> dict[str, Any]:
        for name in order:
            ctx.step(step(name=name)(lambda value=name: value))
        ctx.wait_event("go")
        return {}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=flaky_code)
    rt.tick(workflow=flaky_code, run_id=run_id)
    order.reverse()  # the code now asks for b first: not what position 1 recorded
    before = rt_backend.fingerprint(run_id)
    with pytest.raises(NondeterminismError) as info:
        rt.resume(workflow=flaky_code, run_id=run_id, wait_id="w3", payload={})
    assert info.value.code == "nondeterminism"
    assert info.value.details["position"] == 1
    assert info.value.details["recorded"] == "step 'a'" and info.value.details["code"] == "step 'b'"
    assert "position 1: recorded step 'a', code step 'b'" in str(info.value)
    assert rt_backend.fingerprint(run_id) == before  # the answer was not recorded either
    mark = rt.run_store.get_block(run_id)
    assert mark["position"] == 1 and mark["seq"] == rt.get_checkpoint(run_id).ledger.seq
    order.reverse()  # compatible code again: the answer goes through
    assert rt.resume(workflow=flaky_code, run_id=run_id, wait_id="w3", payload={}).status is RunStatus.COMPLETED


def test_swallowing_the_divergence_does_not_hide_it(rt_backend: Any) -> None:
    flip = {"on": False}

    @workflow("swallow")
    def swallow(ctx: Any) -> dict[str, Any]:
        try:
            ctx.step(step(name="b" if flip["on"] else "a")(lambda: 1))
        except Exception:
            pass  # a workflow that catches everything
        ctx.wait_event("go")
        return {}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=swallow)
    rt.tick(workflow=swallow, run_id=run_id)
    flip["on"] = True
    with pytest.raises(NondeterminismError):
        rt.resume(workflow=swallow, run_id=run_id, wait_id="w2", payload={})


def test_code_that_returns_before_its_recorded_positions_diverges(rt_backend: Any) -> None:
    short = {"on": False}

    @workflow("shortcut")
    def shortcut(ctx: Any) -> dict[str, Any]:
        ctx.step(step(name="one")(lambda: 1))
        ctx.wait_event("go")
        if short["on"]:
            return {}
        ctx.step(step(name="two")(lambda: 2))
        ctx.wait_event("again")
        return {}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=shortcut)
    rt.tick(workflow=shortcut, run_id=run_id)
    rt.resume(workflow=shortcut, run_id=run_id, wait_id="w2", payload={})
    short["on"] = True
    with pytest.raises(NondeterminismError, match="position 3: recorded step 'two', code returned"):
        rt.resume(workflow=shortcut, run_id=run_id, wait_id="w4", payload={})


def test_every_code_first_ledger_verifies(file_backend: Any) -> None:
    from abstractruntime.storage.verify import verify_run

    @workflow("verified")
    def verified(ctx: Any) -> dict[str, Any]:
        ctx.step(lambda: {"token": "x" * 400})  # a stored value
        ctx.step(lambda: {"token": "x" * 400})  # the same value again: a reference
        ctx.patched("p")
        ctx.now()
        return {"answer": ctx.ask("ok?")}

    rt = file_backend.runtime()
    run_id = rt.start(workflow=verified)
    rt.tick(workflow=verified, run_id=run_id)
    rt.resume(workflow=verified, run_id=run_id, wait_id="w5", payload={"answer": "y"})
    report = verify_run(file_backend.root, run_id)
    assert report.ok, report.problems
    assert rt.get_state(run_id).output == {"answer": "y"}


def test_a_fork_replays_its_source_history_and_a_restore_takes_the_history_back(file_backend: Any) -> None:
    from abstractruntime.core.restore import fork_snapshot, restore_snapshot, take_snapshot

    calls: list[str] = []

    def build(name: str) -> dict[str, Any]:
        calls.append(name)
        return {"built": name, "blob": "x" * 300}  # a stored value, referred to by later records

    @workflow("forked")
    def forked(ctx: Any) -> dict[str, Any]:
        first = ctx.step(build, "one")
        answer = ctx.ask("Go on?")
        again = ctx.step(build, "one")  # the same value: a reference to the first's definition
        second = ctx.ask("Finish?")
        return {"first": first["built"], "again": again["blob"] == first["blob"], "answers": [answer, second]}

    rt = file_backend.runtime()
    run_id = rt.start(workflow=forked)
    rt.tick(workflow=forked, run_id=run_id)
    snap = take_snapshot(rt, run_id, name="at-first-question")
    rt.resume(workflow=forked, run_id=run_id, wait_id="w2", payload={"answer": "a"})
    assert calls == ["one", "one"]
    fork_id = fork_snapshot(rt, snap, workflow=forked)
    state = rt.resume(workflow=forked, run_id=fork_id, wait_id="w2", payload={"answer": "fork"})
    assert state.waiting.wait_id == "w4"
    done = rt.resume(workflow=forked, run_id=fork_id, wait_id="w4", payload={"answer": "end"})
    assert done.output == {"first": "one", "again": True, "answers": ["fork", "end"]}
    assert calls == ["one", "one", "one"]  # the fork's first step came from its source's history
    restore_snapshot(rt, snap, workflow=forked)  # the source goes back to its first question
    state = rt.resume(workflow=forked, run_id=run_id, wait_id="w2", payload={"answer": "b"})
    # Positions 3 and 4 are asked for again; their effect ids go on from the run's count, so no
    # wait handle of the run's past (w4) can answer its new question (w6).
    assert state.waiting.wait_id == "w6" and calls == ["one", "one", "one", "one"]
    with pytest.raises(Exception, match="not waiting on w4 any more: it left that wait unanswered"):
        rt.resume(workflow=forked, run_id=run_id, wait_id="w4", payload={"answer": "stale"})
    done = rt.resume(workflow=forked, run_id=run_id, wait_id="w6", payload={"answer": "c"})
    assert done.output["answers"] == ["b", "c"]
    from abstractruntime.storage.verify import verify_run

    assert verify_run(file_backend.root, run_id).ok and verify_run(file_backend.root, fork_id).ok


def test_a_secret_in_a_step_result_is_redacted_in_the_ledger_and_real_on_replay(file_backend: Any) -> None:
    seen: list[str] = []

    @workflow("secretive")
    def secretive(ctx: Any) -> dict[str, Any]:
        token = ctx.step(lambda: {"access_token": "s3cret-value"})
        seen.append(token["access_token"])
        ctx.wait_event("go")
        return {"length": len(token["access_token"])}

    rt = file_backend.runtime()
    run_id = rt.start(workflow=secretive)
    rt.tick(workflow=secretive, run_id=run_id)
    fresh = file_backend.reopen().runtime()  # a new process: values come from the secrets store
    assert fresh.resume(workflow=secretive, run_id=run_id, wait_id="w2", payload={}).output == {"length": 12}
    assert seen == ["s3cret-value", "s3cret-value"]
    ledger = (file_backend.root / "runs" / run_id / "ledger.jsonl").read_text()
    assert "s3cret-value" not in ledger and "[REDACTED]" in ledger


def test_an_effect_that_fails_for_good_fails_the_run_and_retry_goes_on_from_there(rt_backend: Any) -> None:
    down = {"on": True}
    built: list[int] = []

    def llm(run: Any, effect: Any) -> EffectOutcome:
        if down["on"]:
            return EffectOutcome.failed("server unavailable")
        return EffectOutcome.completed({"content": "ok"})

    @workflow("blip")
    def blip(ctx: Any) -> dict[str, Any]:
        ctx.step(lambda: built.append(1) or len(built))
        return {"reply": ctx.llm("hi")["content"]}

    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: llm})
    run_id = rt.start(workflow=blip)
    failed = rt.tick(workflow=blip, run_id=run_id)
    assert failed.status is RunStatus.FAILED and "server unavailable" in failed.error
    down["on"] = False
    done = rt.retry(workflow=blip, run_id=run_id)
    assert done.status is RunStatus.COMPLETED and done.output == {"reply": "ok"}
    assert built == [1]  # the step before the failed call ran once


def test_a_child_that_waits_makes_its_parent_wait_until_the_scheduler_resumes_it(tmp_path: Any) -> None:
    from abstractruntime import create_scheduled_runtime

    @workflow("approver")
    def approver(ctx: Any, item: str) -> dict[str, Any]:
        return {"item": item, "ok": ctx.ask(f"Approve {item}?") == "yes"}

    @workflow("batch")
    def batch(ctx: Any) -> dict[str, Any]:
        first = ctx.child(approver, item="a")
        return {"first": first, "after": ctx.step(lambda: "done")}

    sr = create_scheduled_runtime(workflows=[batch, approver], auto_start=False)
    try:
        run_id, state = sr.run(batch)
        assert state.status is RunStatus.WAITING and state.waiting.reason.value == "subworkflow"
        child_id = state.waiting.details["sub_run_id"]
        child = sr.respond(child_id, {"answer": "yes"})
        assert child.status is RunStatus.COMPLETED
        parent = sr.resume_subworkflow_parent(child_run_id=child_id, child_output=child.output)
        assert parent.status is RunStatus.COMPLETED
        assert parent.output == {"first": {"item": "a", "ok": True}, "after": "done"}
    finally:
        sr.stop()


def test_the_loader_finds_workflows_by_what_they_are(tmp_path: Any) -> None:
    from abstractruntime.core.errors import WorkflowLoadError
    from abstractruntime.loader import load_workflow_file, load_workflows
    from abstractruntime.registry import declared_ids

    source = (
        "from abstractruntime import workflow, WorkflowSpec, StepPlan\n"
        "from abstractruntime import workflow as flow\n"
        "@workflow('alpha')\n"
        "def first(ctx):\n    return {'a': 1}\n"
        "@flow\n"
        "async def beta(ctx):\n    return {'b': 2}\n"
        "gamma_spec = WorkflowSpec('gamma', 'n', {'n': lambda run, ctx: StepPlan('n', complete_output={})})\n"
    )
    path = tmp_path / "several.py"
    path.write_text(source)
    assert declared_ids(source, "several") == ("alpha", "beta", "gamma")
    with pytest.raises(WorkflowLoadError, match=r"several workflows \(alpha, beta, gamma\)"):
        load_workflow_file(path)
    assert load_workflow_file(path, attr="beta").workflow.workflow_id == "beta"  # by workflow id
    assert load_workflow_file(path, attr="first").workflow.workflow_id == "alpha"  # by attribute
    assert load_workflow_file(path, workflow_id="gamma").workflow.workflow_id == "gamma"  # as a run names it
    _, specs = load_workflows(path)
    assert [s.workflow_id for s in specs] == ["alpha", "beta", "gamma"]
    assert all(s.source is not None and s.source.path == str(path) for s in specs)
    single = tmp_path / "single.py"
    single.write_text("from abstractruntime import workflow\n@workflow('solo')\ndef f(ctx):\n    return {}\n")
    assert load_workflow_file(single).workflow.workflow_id == "solo"  # `workflow` is the decorator here
    empty = tmp_path / "empty.py"
    empty.write_text("from abstractruntime import workflow\n")
    with pytest.raises(WorkflowLoadError, match="defines no attribute 'workflow' and no other workflow"):
        load_workflow_file(empty)
