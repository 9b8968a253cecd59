"""Running a code-first workflow's function on the kernel: replay by position, then live work.

The kernel calls :func:`flow_steps` where a graph would call a node (``core/stepping.py``).
It runs the function from the top with a fresh ``ctx``. Each ``ctx`` call takes the next
position; a position the run's history already holds (:mod:`.history`) is *replayed*: its
kind and name must be the ones recorded — otherwise the run diverged
(:class:`~abstractruntime.core.errors.NondeterminismError`, nothing written, the run marked
blocked) — and the call returns the recorded value. Past the history the call is *live*: it
is recorded with the kernel's own protocol (intent durable before any side effect, one fsync
per step) and the kernel's effects (waits, LLM and tool calls, subworkflows) go through the
same effect execution as a graph's. A wait stops the function; the next resume runs it
again from the top.

A step is a ``step`` record pair: its intent (``started``), then its value (``completed``)
or a failed attempt (``failed``). ``ctx.now()``/``uuid()``/``random()`` are one ``step``
record each, ``ctx.patched()`` a ``patch`` record; their whole state change (the position
count, ``effects``) is in their ``delta``, so readers that do not know them replay them.

The same engine checks new code against recorded runs without writing (:func:`check_history`,
``abstractruntime replay``): with no live side, the first call that would need live work
stops the check.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import random as random_module
import threading
import time
import uuid as uuid_module
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Generator, Optional

from ..core.clock import parse_iso, to_iso
from ..core.drive import Request, drive_async, drive_sync, run_coroutine
from ..core.effect_exec import _CURRENT, EffectIdentity, effect_steps
from ..core.errors import (
    AbstractRuntimeError,
    AsyncRequiredError,
    InvalidInputError,
    NondeterminismError,
    StepFailedError,
    VerificationFailedError,
)
from ..core.jcs import jcs
from ..core.markers import has_marker_key
from ..core.models import Effect, EffectType, RecordKind, RunStatus, StepPlan
from ..core.session import fail_run, new_record
from ..core.values import json_copy
from ..core.wal import positional_key
from .context import AsyncContext, Context
from .history import (
    DONE,
    FAILED,
    PATCH,
    STEP,
    Entry,
    History,
    Keeper,
    describe,
    effect_name,
    history_for,
)
from .spec import StepOptions, Workflow, check_inputs, step_name, step_options

if TYPE_CHECKING:
    from ..core.drive import Step
    from ..core.runtime import Runtime
    from ..core.session import RunSession

Op = Generator[Any, Any, Any]

# True while a step's function runs: ctx may not be used inside a step (its calls would be
# recorded inside the step's, and skipped with it on replay).
_IN_STEP: contextvars.ContextVar[bool] = contextvars.ContextVar("abstractruntime_in_step", default=False)


class _Stop(BaseException):
    """The function stops here: the run waits (or failed on an effect), or a replay check reached
    live work. A ``BaseException``, so ``except Exception`` in workflow code does not swallow it."""


class _Abort(BaseException):
    """A kernel error (a store refusing a write, a value that cannot be stored) raised through
    the workflow's code, which must not swallow it; the engine raises the original."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Call:
    """Run a step's function (the session is free meanwhile)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    identity: EffectIdentity


@dataclass
class _Pause:
    """Back off between two attempts of a step."""

    seconds: float


@dataclass
class _Kernel:
    """Drive the kernel's stepping code for one effect (the session is held throughout)."""

    steps: "Step"


_CONTAINERS = (dict, list)


def is_plain(value: Any) -> bool:
    """True when a stored value holds no marker (nothing to resolve: a copy is its value)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item.__class__ is dict:
            if has_marker_key(item):
                return False
            stack.extend(v for v in item.values() if v.__class__ in _CONTAINERS)
        elif item.__class__ is list:
            stack.extend(v for v in item if v.__class__ in _CONTAINERS)
    return True


def round_trip(value: Any) -> Any:
    """``value`` as a record holds it: its JSON round trip (``InvalidInputError`` if JSON cannot hold it)."""
    return json.loads(jcs(value, root="result"))


class Live:
    """The writing side of one tick: records positions in the run's session (docs/workflows.md)."""

    def __init__(self, rt: "Runtime", session: "RunSession", flow: Workflow) -> None:
        self.rt, self.session, self.flow = rt, session, flow
        self.node = session.run.current_node
        recorded = (session.checkpoint.workflow or {}).get("sha256")
        source = flow.source
        # The file changed since the run recorded it and the operator let it through: the new hash
        # is recorded once the recorded history replayed, before the first new record.
        self.upgrade: Optional[tuple[str, str]] = (
            (recorded, source.sha256) if source is not None and recorded and recorded != source.sha256 else None)
        self.positions = 0

    # -- records ------------------------------------------------------------------------------

    def begin(self) -> None:
        """Called before every live write: records the upgrade first, once."""
        if self.upgrade is None:
            return
        before, after = self.upgrade
        self.upgrade = None
        ckpt = self.session.checkpoint
        assert self.flow.source is not None
        ckpt.workflow = self.flow.source.to_dict(self.flow.workflow_id)
        rec = new_record(ckpt.run, RecordKind.UPGRADE)
        rec.finish_success({"from": before, "to": after, "checked": "replay", "positions": self.positions})
        self._write(rec)

    def _write(self, rec: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = self.session.record(rec, **kwargs)
            return doc
        except InvalidInputError:
            raise
        except Exception as exc:
            raise _Abort(exc) from exc

    def _position(self, position: int, new: bool) -> None:
        ckpt = self.session.checkpoint
        if not new:
            return
        if position != ckpt.effects + 1:
            raise _Abort(VerificationFailedError(
                f"run {self.session.run_id}: position {position} is not the next one (the run has begun "
                f"{ckpt.effects}); its history and its effect count disagree"))
        ckpt.effects = position

    def _step_record(self, kind: str, position: int, name: str, *, new: bool = False,
                     meta: Optional[dict[str, Any]] = None) -> Any:
        self._position(position, new)
        rec = new_record(self.session.run, RecordKind.STEP, self.node)
        rec.effect_id = position
        rec.ext = {"step": {"name": name, "kind": kind, **(meta or {})}}
        return rec

    def step_intent(self, position: int, name: str, attempt: int, *, new: bool) -> None:
        """A step's intent (made durable by :meth:`flush` before its function runs)."""
        rec = self._step_record(STEP, position, name, new=new, meta={"attempt": attempt} if attempt > 1 else None)
        self._guarded(rec)

    def step_done(self, position: int, name: str, value: Any) -> Optional[str]:
        """A step's value; the reason when it cannot be recorded (nothing queued then)."""
        rec = self._step_record(STEP, position, name)
        rec.finish_success(value)
        try:
            self._write(rec)
        except InvalidInputError as exc:
            return str(exc)
        return None

    def step_failed(self, position: int, name: str, attempt: int, error: str, exception_type: str,
                    final: bool) -> None:
        """A failed attempt of a step (``final``: no more attempts)."""
        meta: dict[str, Any] = {"exception_type": exception_type}
        if attempt > 1:
            meta["attempt"] = attempt
        if final:
            meta["final"] = True
        rec = self._step_record(STEP, position, name, meta=meta)
        rec.finish_failure(error)
        self._guarded(rec)

    def value(self, position: int, kind: str, value: Any) -> None:
        """A recorded value (``now``, ``uuid``, ``random``)."""
        rec = self._step_record(kind, position, kind, new=True)
        rec.finish_success(value)
        self._guarded(rec)

    def patch(self, position: int, name: str) -> None:
        """The marker of ``ctx.patched(name)`` taking the new path."""
        self._position(position, True)
        rec = new_record(self.session.run, RecordKind.PATCH, self.node)
        rec.effect_id = position
        rec.ext = {"patch": {"name": name, "applied": True}}
        rec.finish_success(None)
        self._guarded(rec)

    def _guarded(self, rec: Any) -> None:
        try:
            self._write(rec)
        except InvalidInputError as exc:
            raise _Abort(exc) from exc
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        if self.session.tail_is_long():
            try:
                self.session.save_checkpoint()  # a long function: recovery replays a bounded tail
            except Exception as exc:
                raise _Abort(exc) from exc

    def flush(self) -> None:
        """Everything recorded so far durable (one write, one fsync): before a step's function runs."""
        try:
            self.session.flush_before_effect()
        except Exception as exc:
            raise _Abort(exc) from exc

    # -- kernel effects -------------------------------------------------------------------------

    def effect_steps(self, position: int, effect: Effect) -> "Step":
        """The kernel's stepping code performing ``effect`` at ``position``."""
        ckpt = self.session.checkpoint
        if position != ckpt.effects + 1:
            raise _Abort(VerificationFailedError(
                f"run {self.session.run_id}: position {position} is not the next one (the run has begun "
                f"{ckpt.effects})"))
        return effect_steps(self.rt, self.session, StepPlan(node_id=self.node, effect=effect, next_node=self.node))

    def effect_result(self, position: int) -> tuple[bool, Any]:
        """``(True, result)`` once the effect at ``position`` completed; ``(False, None)`` when the
        run now waits on it (or failed on it)."""
        session = self.session
        if session.run.status is not RunStatus.RUNNING:
            return False, None
        queued = session.queued_records
        doc = queued[-1] if queued else None
        if doc is None or doc.get("kind") != "effect" or doc.get("effect_id") != position \
                or doc.get("status") != "completed":
            raise _Abort(VerificationFailedError(f"run {session.run_id}: the effect at position {position} "
                                                 "completed without its record"))
        try:
            result = session.stored_result(doc)
        except Exception as exc:
            raise _Abort(exc) from exc
        self._maybe_checkpoint()
        return True, result

    # -- steps' retry budget --------------------------------------------------------------------

    def attempts(self, options: StepOptions) -> int:
        """How many attempts a step gets: ``@step(attempts=)``, else the policy's ``"step"`` entry,
        else its default."""
        if options.attempts is not None:
            return options.attempts
        policy = self.rt.effect_policy
        table = getattr(policy, "effect_max_attempts", None) or {}
        value = table.get("step", getattr(policy, "default_max_attempts", 1))
        return max(1, int(value)) if isinstance(value, int) and not isinstance(value, bool) else 1

    def backoff(self, options: StepOptions, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt."""
        policy = self.rt.effect_policy
        base = options.backoff if options.backoff is not None else getattr(policy, "default_backoff_base", 1.0)
        top = options.backoff_max if options.backoff_max is not None else getattr(policy, "default_backoff_max", 60.0)
        return float(min(float(base) * (2 ** (failures - 1)), float(top)))

    def now(self) -> datetime:
        """The runtime's clock."""
        return self.rt.now()


@dataclass
class FlowRun:
    """One execution of a code-first workflow's function over its run's history."""

    flow: Workflow
    history: History
    run_id: str
    fill: Callable[[dict[str, Any]], Any]
    live: Optional[Live] = None
    inputs: dict[str, Any] = field(default_factory=dict)
    next_position: int = 1
    diverged: Optional[NondeterminismError] = None
    stopped: bool = False
    closed: bool = False
    patches: dict[str, bool] = field(default_factory=dict)
    # How the divergence message says where the code came from (an upgrade names both hashes).
    code_note: str = ""
    # A replay check of a run that ended ("completed", "failed"): the code must end there too.
    ended: Optional[str] = None
    _thread: Optional[int] = None
    _lock: Optional[asyncio.Lock] = None
    _waiting: int = 0  # operations waiting for the lock (async)
    _inflight: set[Any] = field(default_factory=set)
    _names: dict[Any, tuple[str, StepOptions]] = field(default_factory=dict)

    @property
    def is_replaying(self) -> bool:
        """True while the next position is one the history holds."""
        return self.next_position <= self.history.last

    # -- positions ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if _IN_STEP.get():
            raise InvalidInputError("ctx cannot be used inside a step's function: call the step's work directly, "
                                    "or make it two steps")
        if self.diverged is not None:
            raise self.diverged
        if self.stopped:
            raise _Stop()
        if self.closed:
            raise InvalidInputError(f"run {self.run_id}: this ctx belongs to an execution that has ended")

    def claim(self, kind: str, name: str) -> tuple[int, Optional[Entry]]:
        """The next position for a call of ``kind``/``name``, and what the history recorded there;
        a different kind or name there is a divergence (raised, remembered)."""
        self._check_open()
        position = self.next_position
        entry = self.history.get(position)
        while entry is not None and entry.kind == PATCH:
            position += 1  # a patch the code no longer asks about: its new path is the code now
            entry = self.history.get(position)
        self.next_position = position + 1
        if entry is not None and (entry.kind != kind or entry.name != name):
            raise self.diverge(position, entry.describe(), describe(kind, name))
        return position, entry

    def diverge(self, position: int, recorded: str, code: str) -> NondeterminismError:
        """Remember and return the divergence at ``position`` (every later call raises it too)."""
        if self.diverged is None:
            fix = ("Nothing was written; the run is blocked until code that replays its history is deployed "
                   "(guard new code with ctx.patched(...); check with `abstractruntime replay --workflow FILE "
                   f"{self.run_id}`), or it is forked or cancelled")
            self.diverged = NondeterminismError(
                f"Run {self.run_id} diverges from its history at position {position}: recorded {recorded}, "
                f"code {code}{self.code_note}. {fix}",
                run_id=self.run_id, position=position, recorded=recorded, code=code,
                workflow_id=self.flow.workflow_id)
        return self.diverged

    def unreached(self) -> Optional[Entry]:
        """The first recorded position the code never reached (patch markers aside), if any."""
        position = self.next_position
        while position <= self.history.last:
            entry = self.history.get(position)
            if entry is not None and entry.kind != PATCH:
                return entry
            position += 1
        return None

    def need_live(self, position: int, kind: str, name: str) -> Live:
        """The live side for work past the history; a replay check stops here (of a run that ended
        there, the code asking for more is a divergence)."""
        if self.live is None:
            if self.ended is not None:
                raise self.diverge(position, f"the run's end ({self.ended})", describe(kind, name))
            self.stopped = True
            raise _Stop()
        self.live.begin()
        return self.live

    def value_of(self, entry: Entry) -> Any:
        """The value a position recorded (fresh containers, secrets filled in)."""
        value = entry.value
        if value.__class__ not in _CONTAINERS:
            return value
        plain = entry.plain
        if plain is None:
            plain = entry.plain = is_plain(value)
        if plain:
            return json_copy(value)  # nothing to resolve: a fresh copy (the function may change it)
        return self.history.resolve(value, self.fill)

    # -- the replay fast path ----------------------------------------------------------------

    def replayed(self, kind: str, name: str) -> Optional[Entry]:
        """The entry of the next position when it finished as a ``kind``/``name`` call (the common
        case of a replay), taking the position; ``None`` sends the call the full way."""
        if self.diverged is not None or self.stopped or self.closed or self._waiting or _IN_STEP.get():
            return None
        lock = self._lock
        if lock is not None:
            if lock.locked():
                return None  # an operation holds the session: positions are taken in turn
        elif self._thread is not None and threading.get_ident() != self._thread:
            return None
        entry = self.history.entries.get(self.next_position)
        if entry is None or entry.state != DONE or entry.kind != kind or entry.name != name:
            return None
        self.next_position += 1
        return entry

    def step_identity(self, fn: Any) -> tuple[str, StepOptions]:
        """A step function's recorded name and options (looked up once per function)."""
        try:
            return self._names[fn]
        except KeyError:
            found = self._names[fn] = (step_name(fn), step_options(fn))
            return found
        except TypeError:  # an unhashable callable
            return step_name(fn), step_options(fn)

    def stop(self) -> _Stop:
        """The run now waits (or failed): the function stops."""
        self.stopped = True
        return _Stop()

    # -- operations (written once as generators; see run_op / arun_op) ----------------------------

    def step_op(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Op:
        """``ctx.step``: replay a recorded step, or run it (attempts, backoff) and record it."""
        if not callable(fn):
            raise InvalidInputError(f"ctx.step needs a function, not {type(fn).__name__}")
        name, options = self.step_identity(fn)
        position, entry = self.claim(STEP, name)
        attempt = failures = 0
        if entry is not None:
            if entry.state == DONE:
                return self.value_of(entry)
            if entry.state == FAILED:
                raise self._failure(position, entry.name, entry.error, entry.exception_type)
            # Begun when the run stopped (a crash, a stopped worker): it runs again (at least once).
            attempt, failures = entry.attempts, entry.failures
        live = self.need_live(position, STEP, name)
        allowed = live.attempts(options)
        while True:
            attempt += 1
            live.step_intent(position, name, attempt, new=entry is None and attempt == 1)
            live.flush()  # the intent, and everything before it, is durable before the function runs
            identity = EffectIdentity(self.run_id, position, positional_key(self.run_id, position), attempt)
            ok, result = yield _Call(fn, args, kwargs, identity)
            cause: BaseException
            if ok:
                try:
                    seen = round_trip(result)
                except InvalidInputError as exc:
                    problem: Optional[str] = str(exc)
                else:
                    # The value recorded is the one the function sees: every store then replays it alike.
                    problem = live.step_done(position, name, seen)
                    if problem is None:
                        return seen
                cause = InvalidInputError(f"step {name!r} returned a value that cannot be recorded: {problem}")
                error, retryable = str(cause), False
            else:
                cause = result
                error, retryable = f"{type(result).__name__}: {result}", True
            failures += 1
            final = not retryable or failures >= allowed
            live.step_failed(position, name, attempt, error, type(cause).__name__, final)
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
        live.value(position, kind, raw)
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
            live.patch(position, name)
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
        yield _Kernel(live.effect_steps(position, effect))
        done, result = live.effect_result(position)
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
            check_inputs(spec, inputs)

        def register(live: Live) -> None:
            if spec is not None:
                _ensure_registered(live.rt, spec)

        return (yield from self.effect_op(EffectType.START_SUBWORKFLOW, effect_name("start_subworkflow", workflow_id),
                                          lambda: {"workflow_id": workflow_id, "vars": dict(inputs)}, _child_output,
                                          register))

    # -- drivers ---------------------------------------------------------------------------------

    def run_op(self, op: Op) -> Any:
        """Run an operation in this thread (a plain ``def`` workflow)."""
        if self._thread is not None and threading.get_ident() != self._thread:
            op.close()
            raise InvalidInputError("ctx of a plain def workflow was used from another thread; write the workflow "
                                    "as async def to run steps concurrently")
        value: Any = None
        try:
            request = op.send(None)
            while True:
                value = _perform_sync(request)
                request = op.send(value)
        except StopIteration as stop:
            return stop.value

    async def arun_op(self, op: Op) -> Any:
        """Run an operation on the event loop (an ``async def`` workflow): the session is held while
        it is recorded, released while a step's function runs, so steps overlap."""
        lock = self._lock
        assert lock is not None
        marker = asyncio.get_running_loop().create_future()
        self._inflight.add(marker)
        held = False
        try:
            self._waiting += 1
            try:
                await lock.acquire()
            finally:
                self._waiting -= 1
            held = True
            request = op.send(None)
            while True:
                if isinstance(request, (_Call, _Pause)):
                    lock.release()
                    held = False
                    value = await _perform_async(request)
                    self._waiting += 1
                    try:
                        await lock.acquire()
                    finally:
                        self._waiting -= 1
                    held = True
                else:
                    value = await _perform_async(request)
                request = op.send(value)
        except StopIteration as stop:
            return stop.value
        finally:
            if held:
                lock.release()
            self._inflight.discard(marker)
            if not marker.done():
                marker.set_result(None)

    # -- the function --------------------------------------------------------------------------

    def execute(self) -> tuple[str, Any]:
        """Run the function from the top in this thread; ``(how it ended, value)`` (see :func:`flow_steps`)."""
        if self.flow.is_async:
            try:
                return run_coroutine(self.aexecute())  # type: ignore[no-any-return]
            except AsyncRequiredError as exc:
                return "abort", exc
        self._thread = threading.get_ident()
        try:
            value = self.flow.fn(Context(self), **json_copy(self.inputs))
        except BaseException as exc:  # noqa: BLE001 - sorted below: every way out is an outcome
            return self._ended(exc)
        finally:
            self.closed = True
        return self._returned(value)

    async def aexecute(self) -> tuple[str, Any]:
        """:meth:`execute` for an ``async def`` workflow, on the running event loop."""
        self._lock = asyncio.Lock()
        try:
            value = await self.flow.fn(AsyncContext(self), **json_copy(self.inputs))
        except BaseException as exc:  # noqa: BLE001
            outcome = self._ended(exc)
        else:
            outcome = self._returned(value)
        # Steps still running (started and not awaited, or left behind by a wait) record their
        # outcome before the run goes on: their side effects happened.
        while self._inflight:
            await asyncio.wait(list(self._inflight))
        self.closed = True
        if outcome[0] == "returned" and (self.stopped or self.diverged is not None):
            outcome = self._ended(_Stop())
        return outcome

    def _returned(self, value: Any) -> tuple[str, Any]:
        if self.diverged is not None:
            return "diverged", self.diverged
        if self.stopped:
            return "stopped", None
        left = self.unreached()
        if left is not None:
            return "diverged", self.diverge(left.position, left.describe(), "returned")
        return "returned", value

    def _ended(self, exc: BaseException) -> tuple[str, Any]:
        if isinstance(exc, _Abort):
            return "abort", exc.error
        if self.diverged is not None:
            return "diverged", self.diverged
        if isinstance(exc, _Stop) or self.stopped:
            return "stopped", None
        if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
            raise exc
        left = self.unreached()
        if left is not None:
            return "diverged", self.diverge(left.position, left.describe(), f"raised {type(exc).__name__}")
        return "raised", exc


def _perform_sync(request: Any) -> Any:
    if isinstance(request, _Call):
        return _call_sync(request)
    if isinstance(request, _Pause):
        time.sleep(request.seconds)  # looked up at call time, as the kernel's backoff
        return None
    if isinstance(request, _Kernel):
        try:
            return drive_sync(request.steps)
        except Exception as exc:
            raise _Abort(exc) from exc
    raise TypeError(f"unknown request {request!r}")


async def _perform_async(request: Any) -> Any:
    if isinstance(request, _Call):
        return await _call_async(request)
    if isinstance(request, _Pause):
        await asyncio.sleep(request.seconds)
        return None
    if isinstance(request, _Kernel):
        try:
            return await drive_async(request.steps)
        except Exception as exc:
            raise _Abort(exc) from exc
    raise TypeError(f"unknown request {request!r}")


def _call_sync(call: _Call) -> tuple[bool, Any]:
    current, inside = _CURRENT.set(call.identity), _IN_STEP.set(True)
    try:
        result = call.fn(*call.args, **call.kwargs)
        if inspect.isawaitable(result):
            result = run_coroutine(result)
        return True, result
    except AsyncRequiredError as exc:
        raise _Abort(exc) from exc
    except (Exception, SystemExit) as exc:  # the step's failure: an attempt that failed
        return False, exc
    finally:
        _IN_STEP.reset(inside)
        _CURRENT.reset(current)


async def _call_async(call: _Call) -> tuple[bool, Any]:
    if inspect.iscoroutinefunction(call.fn) or inspect.iscoroutinefunction(
            inspect.getattr_static(type(call.fn), "__call__", None)):
        current, inside = _CURRENT.set(call.identity), _IN_STEP.set(True)
        try:
            return True, await call.fn(*call.args, **call.kwargs)
        except (Exception, SystemExit) as exc:
            return False, exc
        finally:
            _IN_STEP.reset(inside)
            _CURRENT.reset(current)
    # A blocking function runs in a worker thread, so other steps (and runs) go on.
    return await asyncio.to_thread(contextvars.copy_context().run, _call_sync, call)


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


@dataclass
class FlowCall(Request):
    """Run the workflow's function (the request :func:`flow_steps` yields to the kernel's driver)."""

    flow_run: FlowRun

    def run_sync(self) -> tuple[str, Any]:
        return self.flow_run.execute()

    async def run_async(self) -> tuple[str, Any]:
        if self.flow_run.flow.is_async:
            return await self.flow_run.aexecute()
        # A plain def workflow blocks on its steps: it runs in a worker thread.
        return await asyncio.to_thread(self.flow_run.execute)


def flow_steps(rt: "Runtime", session: "RunSession", flow: Workflow) -> "Step":
    """One execution of ``flow``'s function for the session's run (stepping code, see ``core/drive.py``).

    Completes the run with the function's return value, fails it with the function's exception,
    leaves it waiting where a wait stopped it; a divergence raises
    :class:`~abstractruntime.core.errors.NondeterminismError` with nothing written and the run
    marked blocked.
    """
    run = session.run
    if not session.sealed_lines:
        raise InvalidInputError(
            f"run {session.run_id}: a code-first workflow needs a ledger store that keeps format-3 records as "
            f"sealed (the SEALED_LINES capability: the file, PostgreSQL and in-memory stores); "
            f"{type(rt.ledger_store).__name__} does not")
    history = history_for(rt, session)
    live = Live(rt, session, flow)
    live.positions = history.last
    keeper = Keeper(rt.ledger_store, session.run_id, session.keeper)
    flow_run = FlowRun(flow, history, session.run_id, keeper.fill, live, inputs=dict(run.vars))
    if live.upgrade is not None:
        flow_run.code_note = (f" (its workflow file changed since it recorded it: sha256 {live.upgrade[0]} -> "
                              f"{live.upgrade[1]})")
    how, value = yield FlowCall(flow_run)
    if how == "abort":
        raise value
    if how == "diverged":
        _mark_blocked(rt, session, flow, value)
        raise value
    if how == "stopped":
        return
    try:
        live.begin()
    except _Abort as abort:
        raise abort.error from None
    if how == "raised":
        fail_run(session, live.node, f"Workflow {flow.workflow_id} raised {type(value).__name__}: {value}",
                 exception_type=type(value).__name__)
    else:
        _complete(session, live.node, value)
    try:
        rt.run_store.drop_block(session.run_id)  # it ended: a mark left from a divergence is history now
    except AbstractRuntimeError:
        pass


def _complete(session: "RunSession", node: str, value: Any) -> None:
    run = session.run
    output = value if isinstance(value, dict) else {"result": value}
    try:
        output = round_trip(output)
        from ..core.canonical import canonical_json, check_size

        check_size(canonical_json(output), what=f"Output of workflow {run.workflow_id!r}")
    except InvalidInputError as exc:
        fail_run(session, node, f"Output of workflow {run.workflow_id!r} cannot be stored: {exc}")
        return
    run.status, run.output, run.waiting = RunStatus.COMPLETED, output, None
    rec = new_record(run, RecordKind.COMPLETE, node)
    session.record(rec.finish_success({"completed": True}))


def _mark_blocked(rt: "Runtime", session: "RunSession", flow: Workflow, error: NondeterminismError) -> None:
    """Note the run as blocked beside its ledger (a hint for `runs list` and workers, not evidence)."""
    from ..core.blocks import block_mark

    source = flow.source
    mark = block_mark(session, error, code_sha256=source.sha256 if source is not None else None)
    try:
        rt.run_store.put_block(session.run_id, mark)
    except AbstractRuntimeError:
        pass  # the divergence itself is what the caller must see


__all__ = ["FlowCall", "FlowRun", "Live", "flow_steps", "round_trip"]
