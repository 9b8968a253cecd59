"""Built-in effect handlers: waits (ask_user, wait_event, wait_until, wait_job) and subworkflows.

A handler is ``handler(run, effect, default_next_node) -> EffectOutcome`` (the two-argument
form ``handler(run, effect)`` is accepted too). ``default_next_node`` is the plan's
``next_node``: where a waiting effect resumes unless its payload names ``resume_to_node``.

Every wait key is checked where the wait is made (:func:`check_wait_key`): a key every store
can hold and index — non-empty text without U+0000, valid Unicode, at most
:data:`MAX_WAIT_KEY_BYTES` bytes. A key outside that fails the effect with a clear error
(recorded, not retried) instead of being recorded and then failing every checkpoint write
of a store that cannot hold it.
"""

from __future__ import annotations

import hashlib
import os
from .fastclass import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Optional

from .clock import parse_iso, to_iso
from .effect_context import current_effect
from .errors import InvalidInputError, RunExistsError
from .ids import uuid_text
from .models import Effect, RunState, RunStatus, WaitReason, WaitState

if TYPE_CHECKING:
    from .runtime import Runtime


# A wait key is indexed by the stores (PostgreSQL's btree entries hold about 2,700 bytes).
MAX_WAIT_KEY_BYTES = 1024


def wait_key_problem(key: object) -> Optional[str]:
    """Why ``key`` cannot be a wait key (``None`` when it can)."""
    if not isinstance(key, str):
        return f"must be text, not {type(key).__name__}"
    if not key:
        return "is empty"
    if "\x00" in key:
        return "contains the character U+0000 (NUL), which PostgreSQL cannot store"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode (it holds a lone surrogate)"
    if size > MAX_WAIT_KEY_BYTES:
        return f"is {size} bytes long; at most {MAX_WAIT_KEY_BYTES} bytes (stores index it)"
    return None


def _refusal(key: object, problem: str, what: str) -> str:
    shown = repr(key) if len(repr(key)) <= 80 else repr(key)[:77] + "..."
    return f"{what} {shown} {problem}"


def check_wait_key(key: object, *, what: str = "wait key") -> str:
    """``key`` if every store can hold and find it, else :class:`InvalidInputError` saying why."""
    problem = wait_key_problem(key)
    if problem is not None:
        raise InvalidInputError(_refusal(key, problem, what))
    return key  # type: ignore[return-value]  # a str: checked above


@dataclass(frozen=True)
class EffectOutcome:
    """What an effect handler returns: completed with a result, waiting, failed, or delayed.

    ``retryable=False`` on a failure tells the runtime not to spend further attempts
    (e.g. an HTTP 4xx: the same request would fail the same way).

    ``ext`` holds named extensions the runtime records on the outcome's ledger record
    (docs/file-format.md): ``ext["usage"]`` (what an LLM call spent: ``input_tokens``,
    ``output_tokens``, ``cost`` ...) is added to the run's totals and checked against its
    budget; ``ext["prices"]`` (the price table in force) is recorded only when it changed.

    A *delayed* outcome (:meth:`delayed`: the service said "try again in N seconds", an HTTP
    429 with ``Retry-After``) is not a failed attempt: the run waits on a durable timer and the
    same effect is performed again when it is due, without using up its retry budget.
    """

    status: str
    result: Optional[dict[str, Any]] = None
    wait: Optional[WaitState] = None
    error: Optional[str] = None
    retryable: bool = True
    ext: Optional[dict[str, Any]] = None
    delay_s: Optional[float] = None

    def __post_init__(self) -> None:
        if self.wait is not None and self.wait.wait_key is not None:
            check_wait_key(self.wait.wait_key)

    @classmethod
    def completed(cls, result: Optional[dict[str, Any]] = None, *,
                  ext: Optional[dict[str, Any]] = None) -> "EffectOutcome":
        """The effect is done; ``result`` goes to ``vars[result_key]``; ``ext`` goes on its record."""
        return cls(status="completed", result=result, ext=ext)

    @classmethod
    def waiting(cls, wait: WaitState) -> "EffectOutcome":
        """The run must pause on ``wait``; a wait key no store can hold fails the effect instead
        (not retryable: the same key would fail the same way)."""
        problem = wait_key_problem(wait.wait_key) if wait.wait_key is not None else None
        if problem is not None:
            return cls.failed(f"cannot wait: {_refusal(wait.wait_key, problem, 'wait key')}", retryable=False)
        return cls(status="waiting", wait=wait)

    @classmethod
    def failed(cls, error: str, *, retryable: bool = True, ext: Optional[dict[str, Any]] = None) -> "EffectOutcome":
        """The attempt failed with ``error`` (``ext``: what it spent nonetheless, recorded on the failure)."""
        return cls(status="failed", error=error, retryable=retryable, ext=ext)

    @classmethod
    def delayed(cls, seconds: float, reason: str, *, ext: Optional[dict[str, Any]] = None) -> "EffectOutcome":
        """Perform this effect again in ``seconds`` (a durable timer; not a failed attempt).

        ``reason`` says why (recorded in the wait's details, e.g. ``"HTTP 429: Retry-After 2"``).
        A delay that is not a finite, non-negative number of seconds is a failed attempt instead.
        """
        try:
            value = float(seconds)
        except (TypeError, ValueError):
            value = float("nan")
        if not value >= 0 or value == float("inf"):
            return cls.failed(f"{reason} (an unusable delay: {seconds!r})", ext=ext)
        return cls(status="delayed", error=str(reason), ext=ext, delay_s=value)


def _resume_to(effect: Effect, default_next_node: Optional[str]) -> Optional[str]:
    return effect.payload.get("resume_to_node") or default_next_node


def _fresh_wait_suffix() -> str:
    # Generated wait keys are unique per wait, so a repeated resume of an old wait is refused.
    return os.urandom(6).hex()  # the first 12 hex digits of a uuid4: all random


def handle_wait_event(run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
    """WAIT_EVENT ``{wait_key, resume_to_node?}`` → wait with reason EVENT."""
    wait_key = effect.payload.get("wait_key")
    if not wait_key:
        return EffectOutcome.failed("wait_event requires payload.wait_key", retryable=False)
    return EffectOutcome.waiting(WaitState(
        reason=WaitReason.EVENT,
        wait_key=str(wait_key),
        resume_to_node=_resume_to(effect, default_next_node),
        result_key=effect.result_key,
        details=effect.payload.get("details"),
    ))


def handle_wait_job(run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
    """WAIT_JOB ``{job_id, resume_to_node?}`` → wait with reason JOB on key ``job:<job_id>``."""
    job_id = effect.payload.get("job_id")
    if not job_id:
        return EffectOutcome.failed("wait_job requires payload.job_id", retryable=False)
    return EffectOutcome.waiting(WaitState(
        reason=WaitReason.JOB,
        wait_key=str(effect.payload.get("wait_key") or f"job:{job_id}"),
        resume_to_node=_resume_to(effect, default_next_node),
        result_key=effect.result_key,
        details={"job_id": str(job_id), **(effect.payload.get("details") or {})},
    ))


def handle_ask_user(run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
    """ASK_USER ``{prompt, choices?, allow_free_text?, wait_key?}`` → wait with reason USER."""
    prompt = effect.payload.get("prompt")
    if not prompt:
        return EffectOutcome.failed("ask_user requires payload.prompt", retryable=False)
    choices = effect.payload.get("choices")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        return EffectOutcome.failed("ask_user payload.choices must be a list of strings", retryable=False)
    wait_key = effect.payload.get("wait_key") or f"user:{run.run_id}:{run.current_node}:{_fresh_wait_suffix()}"
    return EffectOutcome.waiting(WaitState(
        reason=WaitReason.USER,
        wait_key=str(wait_key),
        resume_to_node=_resume_to(effect, default_next_node),
        result_key=effect.result_key,
        prompt=str(prompt),
        choices=list(choices) if choices else None,
        allow_free_text=bool(effect.payload.get("allow_free_text", True)),
    ))


# A built-in handler: (run, effect, default_next_node) -> outcome.
BuiltinHandler = Callable[[RunState, Effect, Optional[str]], EffectOutcome]


def make_wait_until(clock: Callable[[], datetime]) -> BuiltinHandler:
    """WAIT_UNTIL ``{until: ISO}`` → completes at once when due, else waits (reason UNTIL).

    Times are compared as aware datetimes from ``clock`` (the runtime's), never as strings.
    """

    def handle_wait_until(run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
        until = effect.payload.get("until")
        if not until:
            return EffectOutcome.failed("wait_until requires payload.until (ISO timestamp)", retryable=False)
        try:
            moment = parse_iso(str(until))
        except ValueError:
            return EffectOutcome.failed(f"wait_until: {until!r} is not an ISO-8601 timestamp", retryable=False)
        if clock() >= moment:
            return EffectOutcome.completed({"until": str(until), "ready": True})
        return EffectOutcome.waiting(WaitState(
            reason=WaitReason.UNTIL,
            until=to_iso(moment),
            wait_key=str(effect.payload.get("wait_key") or f"until:{run.run_id}:{_fresh_wait_suffix()}"),
            resume_to_node=_resume_to(effect, default_next_node),
            result_key=effect.result_key,
        ))

    return handle_wait_until


def child_run_id(parent_run_id: str, idempotency_key: str) -> str:
    """The deterministic id of a sync subworkflow's child run, so a crash never starts two."""
    digest = hashlib.sha256(f"{parent_run_id}:{idempotency_key}".encode()).digest()[:16]
    return uuid_text(int.from_bytes(digest, "big"))


def make_start_subworkflow(runtime: "Runtime") -> BuiltinHandler:
    """START_SUBWORKFLOW ``{workflow_id, vars?, async?}`` through the runtime's registry.

    It takes the whole runtime: it starts the child run and, for a sync child, advances it.
    """

    def handle_start_subworkflow(run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
        workflow_id = effect.payload.get("workflow_id")
        if not workflow_id:
            return EffectOutcome.failed("start_subworkflow requires payload.workflow_id", retryable=False)
        registry = runtime.workflow_registry
        if registry is None:
            return EffectOutcome.failed(
                "start_subworkflow requires a workflow_registry: pass Runtime(workflow_registry=...) "
                "or call runtime.set_workflow_registry(...)", retryable=False)
        child_spec = registry.get(workflow_id)
        if child_spec is None:
            return EffectOutcome.failed(f"Workflow '{workflow_id}' not found in registry", retryable=False)
        # The child's id comes from this effect's position, so a crash never starts two
        # children and a loop that starts the same subworkflow again gets a new one. The
        # position is this handler's context (one per run, also when one runtime advances many
        # runs at once), never state kept on the shared runtime.
        from .budget import combine
        from .usage_totals import child_report
        identity = current_effect()
        key = identity.key if identity is not None and identity.run_id == run.run_id else \
            runtime.effect_policy.idempotency_key(run=run, node_id=run.current_node, effect=effect)
        sub_run_id = child_run_id(run.run_id, key)
        if not runtime.run_exists(sub_run_id):
            # The child's budget is what remains of this run's (or its own, whichever is lower).
            mine = identity is not None and identity.run_id == run.run_id
            allotment = combine(identity.budget_left if mine and identity is not None else None,
                                getattr(child_spec, "budget", None))
            try:
                runtime.start(workflow=child_spec, vars=dict(effect.payload.get("vars") or {}),
                              actor_id=run.actor_id, parent_run_id=run.run_id, run_id=sub_run_id, budget=allotment)
            except RunExistsError:
                pass  # started before a crash (its ledger holds it): continue that child
        if effect.payload.get("async"):
            return EffectOutcome.completed({"sub_run_id": sub_run_id, "async": True})
        try:
            child = runtime.tick(workflow=child_spec, run_id=sub_run_id)
        except Exception as exc:  # the child's own failure is recorded in its ledger
            return EffectOutcome.failed(f"Subworkflow '{workflow_id}' failed: {exc}")
        if child.status is RunStatus.COMPLETED:
            # The child's spend counts toward this run's totals and budget (ext.child_usage).
            report = child_report(runtime.get_checkpoint(sub_run_id), sub_run_id)
            return EffectOutcome.completed({"sub_run_id": sub_run_id, "output": child.output},
                                           ext={"child_usage": report} if report else None)
        if child.status is RunStatus.WAITING:
            sub_wait = child.waiting.to_dict() if child.waiting else {}
            return EffectOutcome.waiting(WaitState(
                reason=WaitReason.SUBWORKFLOW,
                wait_key=f"subworkflow:{sub_run_id}",
                resume_to_node=_resume_to(effect, default_next_node),
                result_key=effect.result_key,
                details={"sub_run_id": sub_run_id, "sub_workflow_id": workflow_id, "sub_waiting": sub_wait},
            ))
        return EffectOutcome.failed(f"Subworkflow '{workflow_id}' failed: {child.error or child.status.value}")

    return handle_start_subworkflow
