"""The victim of the tamper matrix (docs/reliability.md): a payment that must run exactly once, with
the amount answered by a person and an API key held as a secret while the run waits.

Shared by the folder-store matrix (tests/security/test_tamper_every_file.py) and the PostgreSQL
one (tests/postgres/test_pg_tamper_matrix.py). The probe after each attack is the operator's next
step: answer the wait (or tick a finished run). The runtime must then do *nothing* different from
an untampered run (the payment runs once, with the real amount and key) or *refuse* (a project
error, nothing written, nothing paid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from abstractruntime import Effect, EffectOutcome, EffectType, RunState, StepPlan, WorkflowSpec
from abstractruntime.core.errors import AbstractRuntimeError

API_KEY = "sk-live-0123456789abcdefghijKLMN"


def _spin(run: RunState, ctx: Any) -> StepPlan:
    run.vars["i"] = run.vars.get("i", 0) + 1
    return StepPlan("spin", next_node="spin" if run.vars["i"] < run.vars.get("spins", 0) else "ask")


def _ask(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("ask", next_node="pay", effect=Effect(EffectType.ASK_USER, {"prompt": "Amount?"}, "amount"))


def _pay(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("pay", next_node="done", effect=Effect(
        EffectType.TOOL_CALLS, {"pay": run.vars["amount"]["answer"], "api_key": run.vars["api_key"]},
        result_key="receipt"))


def _done(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("done", complete_output={"receipt": run.vars["receipt"]})


PAYMENT = WorkflowSpec("payment", "spin", {"spin": _spin, "ask": _ask, "pay": _pay, "done": _done})


@dataclass
class Bank:
    """Records every payment (amount, the key it was made with)."""

    payments: list[tuple[Any, Any]] = field(default_factory=list)

    def handler(self, run: RunState, effect: Effect) -> EffectOutcome:
        self.payments.append((effect.payload["pay"], effect.payload["api_key"]))
        return EffectOutcome.completed({"receipt": f"paid-{len(self.payments)}"})


@dataclass
class Victim:
    """A waiting payment run and what the probe needs."""

    run_id: str
    wait_id: str
    bank: Bank
    signer: Optional[Any]

    def runtime(self, store: Any) -> Any:
        return store.runtime(effect_handlers={EffectType.TOOL_CALLS: self.bank.handler}, signer=self.signer)


def start_victim(store: Any, signer: Optional[Any] = None, *, spins: int = 0, run_id: str = "victim") -> Victim:
    """Start the payment run and tick it to its question (nothing paid yet)."""
    bank = Bank()
    victim = Victim(run_id, "", bank, signer)
    runtime = victim.runtime(store)
    runtime.start(workflow=PAYMENT, run_id=run_id, vars={"api_key": API_KEY, "spins": spins})
    waiting = runtime.tick(workflow=PAYMENT, run_id=run_id, max_steps=spins + 10)
    assert waiting.waiting is not None
    victim.wait_id = waiting.waiting.wait_id
    return victim


def pay(store: Any, victim: Victim, amount: Any = 7) -> RunState:
    """Answer the question: the run pays and completes."""
    state: RunState = victim.runtime(store).resume(workflow=PAYMENT, run_id=victim.run_id, wait_id=victim.wait_id,
                                                   payload={"answer": amount}, max_steps=10)
    return state


@dataclass
class Outcome:
    """What the probe did: ``ran`` (with the run's final state) or ``refused`` (with the error)."""

    ran: bool
    state: Optional[RunState] = None
    error: Optional[AbstractRuntimeError] = None


def probe(store: Any, victim: Victim, *, answer: bool = True) -> Outcome:
    """The operator's next step after the attack: answer the wait (or, ``answer=False``, tick)."""
    try:
        if answer:
            return Outcome(True, state=pay(store, victim))
        runtime = victim.runtime(store)
        return Outcome(True, state=runtime.tick(workflow=PAYMENT, run_id=victim.run_id))
    except AbstractRuntimeError as exc:
        return Outcome(False, error=exc)


def paid_once(victim: Victim, outcome: Outcome) -> bool:
    """The untampered result: one payment of the answered amount, with the real key, and a completed run."""
    return (outcome.ran and outcome.state is not None and outcome.state.status.value == "completed"
            and victim.bank.payments == [(7, API_KEY)])


def _wait(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("wait", next_node="count", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "invoice"}, "event"))


def _count(run: RunState, ctx: Any) -> StepPlan:
    run.vars["seen"] = run.vars.get("seen", 0) + 1
    return StepPlan("count", next_node="wait" if run.vars["seen"] < 5 else "done")


# Counts the invoices delivered to it, waiting on the same key again after each.
INVOICES = WorkflowSpec("invoices", "wait", {"wait": _wait, "count": _count,
                                             "done": lambda run, ctx: StepPlan("done", complete_output={})})


def emit(store: Any, event_id: str, runtime: Any) -> Any:
    """``emit invoice --id EVENT_ID`` (the payload is the same each time the emitter retries)."""
    from abstractruntime.scheduler.events import emit_event

    return emit_event(store.runs, "invoice", {"invoice": event_id}, resolve=lambda run: (INVOICES, runtime),
                      event_id=event_id, events=store.events, ledger=store.ledger)


def seen(store: Any, run_id: str) -> int:
    return int(store.runtime().get_state(run_id).vars.get("seen", 0))
