"""Typed values in code-first workflows: steps by their return hints, inputs by their parameters'
hints, outputs as JSON — the same value on the first execution and on every replay."""

from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, NamedTuple, Optional, TypedDict, Union

import pytest

from abstractruntime import NondeterminismError, StepFailedError, workflow
from abstractruntime.core.errors import InvalidInputError
from abstractruntime.core.models import RunStatus
from abstractruntime.flow.typed import converter, to_json


class Tier(enum.Enum):
    SMALL = "small"
    LARGE = "large"


class Layer(NamedTuple):
    digest: str
    size: float


@dataclass
class Build:
    image: str
    tier: Tier
    built_at: datetime
    layers: list[Layer] = field(default_factory=list)
    cost: float = 0.0
    ticket: Optional[uuid.UUID] = None
    tags: frozenset[str] = frozenset()


@dataclass
class Limits:
    cpu: float
    memory: int


BUILT_AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
TICKET = uuid.UUID("12345678-1234-5678-1234-567812345678")
calls: list[str] = []


def build(service: str) -> Build:
    calls.append(service)
    return Build(image=f"{service}:1", tier=Tier.LARGE, built_at=BUILT_AT, layers=[Layer("sha-a", 2)], cost=3,
                 ticket=TICKET, tags=frozenset({"b", "a"}))


async def abuild(service: str) -> Build:
    return build(service)


def untyped_build(service: str):  # type: ignore[no-untyped-def]
    return Build(image=f"{service}:1", tier=Tier.SMALL, built_at=BUILT_AT)


def wrong_build(service: str) -> Build:
    return {"image": service}  # type: ignore[return-value]


def records(rt: Any, run_id: str) -> list[dict[str, Any]]:
    return rt.get_ledger(run_id)


def test_a_step_is_its_declared_type_on_the_first_execution_and_on_replay(rt_backend: Any) -> None:
    seen: list[Build] = []
    calls.clear()

    @workflow("typed_deploy")
    def deploy(ctx: Any, service: str) -> Build:
        made = ctx.step(build, service)
        seen.append(made)
        ctx.wait_event("go")
        return made

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=deploy, vars={"service": "web"})
    assert rt.tick(workflow=deploy, run_id=run_id).status is RunStatus.WAITING
    state = rt.resume(workflow=deploy, run_id=run_id, wait_id="w2", payload={})
    assert state.status is RunStatus.COMPLETED and calls == ["web"]
    first, replayed = seen
    assert isinstance(first, Build) and first == replayed
    assert first.tier is Tier.LARGE and first.built_at == BUILT_AT and first.ticket == TICKET
    assert first.layers == [Layer("sha-a", 2.0)] and isinstance(first.layers[0], Layer)
    assert type(first.cost) is float and type(first.layers[0].size) is float  # a recorded 3 is 3.0
    assert first.tags == frozenset({"a", "b"})
    # The ledger holds JSON (the dataclass's fields); the output is the same JSON.
    done = [r for r in records(rt, run_id) if r["kind"] == "step" and r["status"] == "completed"]
    stored = {"image": "web:1", "tier": "large", "built_at": "2030-01-02T03:04:05Z",
              "layers": [["sha-a", 2]], "cost": 3, "ticket": str(TICKET), "tags": ["a", "b"]}
    assert done[0]["result"] == stored and state.output == stored


def test_an_async_step_and_an_unannotated_step(rt_backend: Any) -> None:
    @workflow("typed_async")
    async def deploy(ctx: Any) -> dict[str, Any]:
        typed = await ctx.step(abuild, "api")
        plain = await ctx.step(untyped_build, "db")
        return {"typed": isinstance(typed, Build) and typed.tier is Tier.LARGE, "plain": plain}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=deploy)
    state = rt.tick(workflow=deploy, run_id=run_id)
    # Without a return hint a step's value is its JSON (a dataclass as its fields), as recorded.
    assert state.output == {"typed": True, "plain": {"image": "db:1", "tier": "small", "built_at": "2030-01-02T03:04:05Z",
                                                     "layers": [], "cost": 0.0, "ticket": None, "tags": []}}


def test_a_value_that_does_not_fit_its_declared_type_is_a_final_failure(rt_backend: Any) -> None:
    @workflow("typed_wrong")
    def deploy(ctx: Any) -> dict[str, Any]:
        try:
            ctx.step(wrong_build, "web")
        except StepFailedError as exc:
            return {"error": exc.details["error"]}
        return {}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=deploy)
    error = rt.tick(workflow=deploy, run_id=run_id).output["error"]
    assert "does not fit its declared return type" in error and "Build" in error
    failed = [r for r in records(rt, run_id) if r["kind"] == "step" and r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["ext"]["step"]["final"] is True


def test_code_declaring_another_type_for_a_recorded_step_diverges_writing_nothing(rt_backend: Any) -> None:
    @workflow("typed_change")
    def deploy(ctx: Any) -> dict[str, Any]:
        ctx.step(build, "web")
        ctx.wait_event("go")
        return {}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=deploy)
    rt.tick(workflow=deploy, run_id=run_id)
    before = records(rt, run_id)

    def build_v2(service: str) -> Limits:  # the same step name, a type its record does not fit
        return Limits(1.0, 1)

    build_v2.__qualname__ = build.__qualname__

    @workflow("typed_change")
    def deploy_v2(ctx: Any) -> dict[str, Any]:
        ctx.step(build_v2, "web")
        ctx.wait_event("go")
        return {}

    with pytest.raises(NondeterminismError) as caught:
        rt.resume(workflow=deploy_v2, run_id=run_id, wait_id="w2", payload={})
    assert caught.value.details["position"] == 1 and "declared to return another type" in str(caught.value)
    assert records(rt, run_id) == before


def test_inputs_are_built_by_their_hints_and_refused_before_a_run_when_they_do_not_fit(rt_backend: Any) -> None:
    @workflow("typed_inputs")
    def deploy(ctx: Any, when: datetime, tier: Tier, limits: Limits, sizes: tuple[int, ...] = (),
               budget: Optional[Decimal] = None, label: Union[int, str] = 0) -> dict[str, Any]:
        assert isinstance(when, datetime) and isinstance(tier, Tier) and isinstance(limits, Limits)
        assert isinstance(sizes, tuple) and (budget is None or isinstance(budget, Decimal))
        return {"when": when, "tier": tier, "cpu": limits.cpu, "sizes": sizes, "budget": budget, "label": label}

    rt = rt_backend.runtime()
    good = {"when": "2030-01-02T03:04:05Z", "tier": "small", "limits": {"cpu": 2, "memory": 512},
            "sizes": [1, 2], "budget": "9.50", "label": "x"}
    run_id = rt.start(workflow=deploy, vars=good)
    state = rt.tick(workflow=deploy, run_id=run_id)
    assert state.status is RunStatus.COMPLETED, state.error
    assert state.output == {"when": "2030-01-02T03:04:05Z", "tier": "small", "cpu": 2.0, "sizes": [1, 2],
                            "budget": "9.50", "label": "x"}
    before = len(rt.run_store.list_runs())
    for bad, named in ((dict(good, tier="huge"), "'tier'"), (dict(good, limits={"cpu": 1}), "'limits'"),
                       (dict(good, when="yesterday"), "'when'"), (dict(good, label=[1]), "'label'")):
        with pytest.raises(InvalidInputError, match=named):
            rt.start(workflow=deploy, vars=bad)
    assert len(rt.run_store.list_runs()) == before  # refused before a run was created


class Settings(TypedDict):
    region: str


def test_hints_this_module_does_not_judge_let_the_value_through(rt_backend: Any) -> None:
    @workflow("typed_loose")
    def deploy(ctx: Any, settings: Settings, mode: Literal["fast", "slow"] = "fast",
               either: Union[Settings, int] = 0) -> dict[str, Any]:
        return {"settings": settings, "mode": mode, "either": either}

    rt = rt_backend.runtime()
    inputs = {"settings": {"region": "eu"}, "mode": "slow", "either": {"region": "us"}}
    run_id = rt.start(workflow=deploy, vars=inputs)
    assert rt.tick(workflow=deploy, run_id=run_id).output == inputs


def test_to_json_and_converters() -> None:
    assert to_json({"s": {3, 1, 2}, "t": (1, Tier.SMALL), "d": Decimal("1.10"), "p": Path("/a/b")}) == \
        {"s": [1, 2, 3], "t": [1, "small"], "d": "1.10", "p": "/a/b"}
    assert to_json({"mixed": {1, "a"}}) == {"mixed": ["a", 1]}  # an order that does not depend on the set's
    # No conversion is needed for JSON's own types: replaying them costs nothing.
    for hint in (None, Any, dict, list, str, int, bool, dict[str, Any], list[int], Optional[str]):
        assert converter(hint) is None, hint
    make = converter(dict[str, list[Layer]])
    assert make is not None and make({"x": [["d", 1]]}) == {"x": [Layer("d", 1.0)]}
    make = converter(Optional[Limits])
    assert make is not None and make(None) is None and make({"cpu": 1, "memory": 2}) == Limits(1.0, 2)


def test_a_pydantic_model_as_a_step_result(rt_backend: Any) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Receipt(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        order: str
        amount: Decimal

    def charge(order: str) -> Receipt:
        return Receipt(order=order, amount=Decimal("12.50"))

    charge.__annotations__["return"] = Receipt  # a local class: give the hint as the class itself
    seen: list[Any] = []

    @workflow("typed_pydantic")
    def checkout(ctx: Any) -> dict[str, Any]:
        seen.append(ctx.step(charge, "o-1"))
        ctx.wait_event("go")
        return {"ok": True}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=checkout)
    rt.tick(workflow=checkout, run_id=run_id)
    rt.resume(workflow=checkout, run_id=run_id, wait_id="w2", payload={})
    assert seen[0] == seen[1] == Receipt(order="o-1", amount=Decimal("12.50"))
    done = [r for r in records(rt, run_id) if r["kind"] == "step" and r["status"] == "completed"]
    assert done[0]["result"] == {"order": "o-1", "amount": "12.50"}


FLOW = textwrap.dedent('''
    from abstractruntime import workflow

    @workflow("versions")
    def versions(ctx, version: str, count, ratio: float = 1):
        return {"version": version, "count": count, "ratio": ratio}
''')


def test_a_text_input_takes_var_as_its_literal_text_on_the_command_line(tmp_path: Path) -> None:
    code = tmp_path / "versions.py"
    code.write_text(FLOW)
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(tmp_path / "store"), "NO_COLOR": "1"}
    done = subprocess.run([str(Path(sys.executable).parent / "abstractruntime"), "run", str(code), "--var",
                           "version=1.10", "--var", "count=1.10", "--var", "ratio=2", "--json"],
                          capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    # `version: str` keeps the text; an input without a hint is parsed as JSON; a float is a float.
    assert json.loads(done.stdout)["output"] == {"version": "1.10", "count": 1.1, "ratio": 2.0}
    refused = subprocess.run([str(Path(sys.executable).parent / "abstractruntime"), "run", str(code), "--var",
                              "version=2", "--var", "count=1", "--var", "ratio=fast", "--run-id", "r2"],
                             capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "input 'ratio' does not fit its type" in refused.stderr
    assert not (tmp_path / "store" / "runs" / "r2").exists()  # refused before a run was created


def test_a_run_started_before_its_inputs_were_typed_gets_them_as_recorded(rt_backend: Any) -> None:
    @workflow("typed_later")
    def before(ctx: Any, replicas: Any, tier: Any) -> dict[str, Any]:
        ctx.wait_event("go")
        return {}

    @workflow("typed_later")
    def after(ctx: Any, replicas: int, tier: Tier) -> dict[str, Any]:
        ctx.wait_event("go")
        return {"replicas": replicas, "tier": tier if isinstance(tier, str) else "typed"}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=before, vars={"replicas": "3", "tier": "huge"})  # fine for the old code
    rt.tick(workflow=before, run_id=run_id)
    state = rt.resume(workflow=after, run_id=run_id, wait_id="w1", payload={})
    assert state.status is RunStatus.COMPLETED and state.output == {"replicas": "3", "tier": "huge"}
    with pytest.raises(InvalidInputError, match="'replicas'"):
        rt.start(workflow=after, vars={"replicas": "3", "tier": "small"})  # a new run is checked


def test_a_cyclic_or_undumpable_step_value_is_a_final_failure_naming_the_problem(rt_backend: Any) -> None:
    class Broken:
        def model_dump(self, mode: str) -> Any:
            raise ValueError("no dump today")

    def cyclic() -> dict[str, Any]:
        loop: dict[str, Any] = {}
        loop["self"] = loop
        return loop

    @workflow("typed_cycle")
    def deploy(ctx: Any) -> dict[str, Any]:
        errors = []
        for fn in (cyclic, Broken):
            try:
                ctx.step(fn)
            except StepFailedError as exc:
                errors.append(exc.details["error"])
        return {"errors": errors}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=deploy)
    state = rt.tick(workflow=deploy, run_id=run_id)
    first, second = state.output["errors"]
    assert "cannot be recorded" in first and "cycle" in first
    assert "cannot be recorded" in second and "no dump today" in second
