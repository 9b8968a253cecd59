"""The ``ctx`` operations of a code-first run, each written once as a generator.

An operation takes the next position (:meth:`~.run.FlowRun.claim`); a position the run's
history holds returns its recorded value (or raises its recorded failure); past the history
the operation asks for live work (:meth:`~.run.FlowRun.need_live`) and yields the requests
of :mod:`.requests` for what takes time. The drivers are in :mod:`.run`.
"""

from __future__ import annotations

import random as random_module
import uuid as uuid_module
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Generator, Optional

from ..core.clock import parse_iso, to_iso
from ..core.effect_context import EffectIdentity
from ..core.errors import InvalidInputError, StepFailedError, VerificationFailedError
from ..core.models import Effect, EffectType
from ..core.wal import positional_key
from .history import DONE, FAILED, PATCH, STEP, Entry, History, effect_name
from .live import Live
from .requests import _Abort, _Call, _Kernel, _Pause, _Stop, round_trip
from .spec import StepOptions, Workflow, check_inputs
from .typed import Convert, TypeMismatch, to_json

if TYPE_CHECKING:
    from ..core.runtime import Runtime

Op = Generator[Any, Any, Any]


class Operations:
    """The operations of :class:`~.run.FlowRun` (which provides the positions and the values)."""

    run_id: str
    history: History
    live: Optional[Live]
    next_position: int
    patches: dict[str, bool]

    def claim(self, kind: str, name: str) -> tuple[int, Optional[Entry]]:
        raise NotImplementedError  # provided by FlowRun

    def need_live(self, position: int, kind: str, name: str) -> Live:
        raise NotImplementedError  # provided by FlowRun

    def value_of(self, entry: Entry) -> Any:
        raise NotImplementedError  # provided by FlowRun

    def step_identity(self, fn: Any) -> tuple[str, StepOptions, Optional[Convert]]:
        raise NotImplementedError  # provided by FlowRun

    def step_value(self, entry: Entry, convert: Optional[Convert]) -> Any:
        raise NotImplementedError  # provided by FlowRun

    def stop(self) -> _Stop:
        raise NotImplementedError  # provided by FlowRun

    def _check_open(self) -> None:
        raise NotImplementedError  # provided by FlowRun

    def step_op(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Op:
        """``ctx.step``: replay a recorded step, or run it (attempts, backoff) and record it."""
        if not callable(fn):
            raise InvalidInputError(f"ctx.step needs a function, not {type(fn).__name__}")
        name, options, convert = self.step_identity(fn)
        position, entry = self.claim(STEP, name)
        attempt = failures = 0
        if entry is not None:
            if entry.state == DONE:
                return self.step_value(entry, convert)
            if entry.state == FAILED:
                raise self._failure(position, entry.name, entry.error, entry.exception_type)
            # Begun when the run stopped (a crash, a stopped worker): it runs again (at least once).
            attempt, failures = entry.attempts, entry.failures
        live = self.need_live(position, STEP, name)
        allowed = live.attempts(options)
        effect_id = entry.effect_id if entry is not None else live.new_effect_id()
        while True:
            attempt += 1
            live.step_intent(effect_id, name, attempt)
            live.flush()  # the intent, and everything before it, is durable before the function runs
            # The step's key comes from its effect id: stable across its attempts, never another step's.
            identity = EffectIdentity(self.run_id, effect_id, positional_key(self.run_id, effect_id), attempt)
            ok, result = yield _Call(fn, args, kwargs, identity)
            cause: BaseException
            if ok:
                try:
                    seen = round_trip(to_json(result))
                    # What the function sees is built from the value recorded (typed by the step
                    # function's return hint): every store then replays it alike.
                    typed = convert(seen) if convert is not None else seen
                except InvalidInputError as exc:
                    problem: Optional[str] = str(exc)
                except TypeMismatch as exc:
                    problem = f"it does not fit its declared return type: {exc}"
                else:
                    problem = live.step_done(effect_id, name, seen)
                    if problem is None:
                        return typed
                cause = InvalidInputError(f"step {name!r} returned a value that cannot be recorded: {problem}")
                error, retryable = str(cause), False
            else:
                cause = result
                error, retryable = f"{type(result).__name__}: {result}", True
            failures += 1
            final = not retryable or failures >= allowed
            live.step_failed(effect_id, name, attempt, error, type(cause).__name__, final)
            if final:
                raise self._failure(position, name, error, type(cause).__name__) from cause
            yield _Pause(live.backoff(options, failures))

    def _failure(self, position: int, name: str, error: Optional[str], exception_type: Optional[str]) -> StepFailedError:
        return StepFailedError(f"step {name!r} (position {position}) failed: {error}", run_id=self.run_id,
                               position=position, step=name, exception_type=exception_type, error=error)

    def value_op(self, kind: str) -> Op:
        """``ctx.now()`` / ``uuid()`` / ``random()``: a value made once and recorded."""
        position, entry = self.claim(kind, kind)
        if entry is not None:
            return _as_value(kind, self.value_of(entry))
        live = self.need_live(position, kind, kind)
        if kind == "now":
            raw: Any = to_iso(live.now())
        elif kind == "uuid":
            raw = str(uuid_module.uuid4())
        else:
            raw = random_module.random()
        live.value(kind, raw)
        return _as_value(kind, raw)
        yield  # a generator, like every operation

    def patched_op(self, name: str) -> Op:
        """``ctx.patched(name)``: see :meth:`Context.patched`."""
        if not isinstance(name, str) or not name:
            raise InvalidInputError("ctx.patched needs a non-empty name")
        self._check_open()
        if name in self.patches:
            return self.patches[name]
        position = self.next_position
        entry = self.history.get(position)
        while entry is not None and entry.kind == PATCH and entry.name != name:
            position += 1
            entry = self.history.get(position)
        if entry is not None and entry.kind == PATCH:
            self.next_position = position + 1
            decision = bool(entry.value)
        elif entry is not None or position <= self.history.last:
            decision = False  # recorded before the change: the old path, and its positions stay as they are
        else:
            live = self.need_live(position, PATCH, name)
            self.next_position = position + 1
            live.patch(name)
            decision = True
        self.patches[name] = decision
        return decision
        yield  # a generator, like every operation

    def effect_op(self, effect_type: EffectType, name: str, payload: Callable[[], dict[str, Any]],
                  convert: Callable[[Any], Any], before: Optional[Callable[[Live], None]] = None) -> Op:
        """A kernel effect at the next position: replayed, or performed by the kernel."""
        position, entry = self.claim(effect_type.value, name)
        if entry is not None:
            if entry.state == DONE:
                return convert(self.value_of(entry))
            if self.live is None:
                raise self.stop()  # a replay check: the run waits (or failed) here
            raise _Abort(VerificationFailedError(
                f"run {self.run_id}: position {position} ({entry.describe()}) is {entry.state}, yet the run is "
                "running; run `abstractruntime verify`"))
        live = self.need_live(position, effect_type.value, name)
        if before is not None:
            before(live)
        effect = Effect(effect_type, payload())
        yield _Kernel(live.effect_steps(effect))
        done, result = live.effect_result()
        if not done:
            raise self.stop()
        return convert(result)

    def ask_op(self, prompt: Any, choices: Any, free_text: Optional[bool], details: Any = None) -> Op:
        """``ctx.ask``."""
        if not isinstance(prompt, str) or not prompt:
            raise InvalidInputError("ctx.ask needs a prompt (non-empty text)")
        if choices is not None and not (isinstance(choices, (list, tuple)) and choices
                                        and all(isinstance(c, str) for c in choices)):
            raise InvalidInputError("ctx.ask choices must be a non-empty list of strings")

        def payload() -> dict[str, Any]:
            body: dict[str, Any] = {"prompt": prompt}
            if choices:
                body["choices"] = list(choices)
                body["allow_free_text"] = bool(free_text)
            return body

        return (yield from self.effect_op(EffectType.ASK_USER, "ask", payload, _answer))

    def sleep_op(self, *, seconds: Any = None, until: Any = None) -> Op:
        """``ctx.sleep`` / ``ctx.sleep_until``."""
        if seconds is not None and (not isinstance(seconds, (int, float)) or isinstance(seconds, bool)
                                    or seconds != seconds or seconds < 0):
            raise InvalidInputError(f"ctx.sleep needs a number of seconds >= 0, not {seconds!r}")
        moment = _moment(until) if until is not None else None
        delay = float(seconds or 0)
        holder: dict[str, datetime] = {}

        def take_time(live: Live) -> None:
            holder["now"] = live.now()

        def payload() -> dict[str, Any]:
            target = moment if moment is not None else holder["now"] + timedelta(seconds=delay)
            return {"until": to_iso(target)}

        return (yield from self.effect_op(EffectType.WAIT_UNTIL, "sleep", payload, lambda _: None, take_time))

    def wait_event_op(self, key: Any) -> Op:
        """``ctx.wait_event``."""
        if not isinstance(key, str) or not key:
            raise InvalidInputError("ctx.wait_event needs an event key (non-empty text)")
        return (yield from self.effect_op(EffectType.WAIT_EVENT, "wait_event", lambda: {"wait_key": key},
                                          lambda v: v))

    def wait_job_op(self, job_id: Any) -> Op:
        """``ctx.wait_job``."""
        if not isinstance(job_id, str) or not job_id:
            raise InvalidInputError("ctx.wait_job needs a job id (non-empty text)")
        return (yield from self.effect_op(EffectType.WAIT_JOB, "wait_job", lambda: {"job_id": job_id}, lambda v: v))

    def llm_op(self, prompt: Any, messages: Any, system_prompt: Any, tools: Any, params: dict[str, Any]) -> Op:
        """``ctx.llm``."""
        if prompt is None and messages is None:
            raise InvalidInputError("ctx.llm needs a prompt or messages")

        def payload() -> dict[str, Any]:
            body = {"prompt": prompt, "messages": messages, "system_prompt": system_prompt, "tools": tools,
                    "params": dict(params) or None}
            return {k: v for k, v in body.items() if v is not None}

        return (yield from self.effect_op(EffectType.LLM_CALL, "llm", payload, lambda v: v))

    def tools_op(self, calls: Any) -> Op:
        """``ctx.tools``."""
        if not isinstance(calls, list):
            raise InvalidInputError("ctx.tools needs a list of tool calls")
        return (yield from self.effect_op(EffectType.TOOL_CALLS, "tools", lambda: {"tool_calls": calls},
                                          lambda v: v))

    def child_op(self, workflow: Any, inputs: dict[str, Any]) -> Op:
        """``ctx.child``."""
        spec = workflow if hasattr(workflow, "workflow_id") and hasattr(workflow, "nodes") else None
        workflow_id = spec.workflow_id if spec is not None else workflow
        if not isinstance(workflow_id, str) or not workflow_id:
            raise InvalidInputError("ctx.child needs a workflow (or a registered workflow id)")
        if isinstance(spec, Workflow):
            check_inputs(spec, to_json(dict(inputs)))

        def register(live: Live) -> None:
            if spec is not None:
                _ensure_registered(live.rt, spec)

        return (yield from self.effect_op(EffectType.START_SUBWORKFLOW, effect_name("start_subworkflow", workflow_id),
                                          lambda: {"workflow_id": workflow_id, "vars": to_json(dict(inputs))}, _child_output,
                                          register))


def _answer(value: Any) -> Any:
    """What ``ctx.ask`` returns: the answer's text, or a structured answer's whole payload."""
    if isinstance(value, dict) and set(value) == {"answer"} and isinstance(value["answer"], str):
        return value["answer"]
    return value


def _child_output(value: Any) -> Any:
    return value.get("output") if isinstance(value, dict) and "output" in value else value


def _as_value(kind: str, raw: Any) -> Any:
    if kind == "now":
        return parse_iso(str(raw))
    if kind == "uuid":
        return uuid_module.UUID(str(raw))
    return float(raw)


def _moment(when: Any) -> datetime:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise InvalidInputError("ctx.sleep_until needs an aware datetime (with a timezone)")
        return when.astimezone(timezone.utc)
    if isinstance(when, str):
        try:
            return parse_iso(when)
        except ValueError:
            raise InvalidInputError(f"ctx.sleep_until: {when!r} is not an ISO-8601 timestamp") from None
    raise InvalidInputError(f"ctx.sleep_until needs a datetime or ISO-8601 text, not {type(when).__name__}")


def _ensure_registered(rt: "Runtime", spec: Any) -> None:
    """Make ``spec`` findable by the runtime's ``start_subworkflow`` handler (a registry of specs,
    not per-run state); a spec the operator registered under the id is kept."""
    from ..scheduler.registry import WorkflowRegistry

    registry = rt.workflow_registry
    if registry is None:
        registry = WorkflowRegistry()
        rt.set_workflow_registry(registry)
    if registry.get(spec.workflow_id) is None:
        try:
            registry.register(spec)
        except ValueError:
            pass  # registered meanwhile by another run


# -- the kernel's hook ------------------------------------------------------------------------


__all__ = ["Op", "Operations"]
