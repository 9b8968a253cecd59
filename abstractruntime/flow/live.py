"""The writing side of one tick of a code-first run: its records, in the run's session.

:class:`Live` is what the engine gives a :class:`~.run.FlowRun` when the run is advanced
(a ``replay`` check has none): it records each new position with the kernel's protocol — a
step's intent durable before its function runs, its value or failure after, recorded values
and patch markers, and the kernel's own effects through its effect execution — and records
an accepted upgrade before anything new.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional

from ..core.effect_exec import effect_steps
from ..core.errors import InvalidInputError, VerificationFailedError
from ..core.models import Effect, RecordKind, RunStatus, StepPlan
from ..core.session import new_record
from .history import STEP
from .requests import _Abort
from .spec import StepOptions, Workflow

if TYPE_CHECKING:
    from ..core.drive import Step
    from ..core.runtime import Runtime
    from ..core.session import RunSession


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

    def new_effect_id(self) -> int:
        """The effect id of a new position: the kernel's next (a run's positions are numbered by
        their effect ids, which never repeat, also after a restore)."""
        ckpt = self.session.checkpoint
        ckpt.effects += 1
        return ckpt.effects

    def _step_record(self, kind: str, effect_id: int, name: str, *, meta: Optional[dict[str, Any]] = None) -> Any:
        rec = new_record(self.session.run, RecordKind.STEP, self.node)
        rec.effect_id = effect_id
        rec.ext = {"step": {"name": name, "kind": kind, **(meta or {})}}
        return rec

    def step_intent(self, effect_id: int, name: str, attempt: int) -> None:
        """A step's intent (made durable by :meth:`flush` before its function runs)."""
        rec = self._step_record(STEP, effect_id, name, meta={"attempt": attempt} if attempt > 1 else None)
        self._guarded(rec)

    def step_done(self, effect_id: int, name: str, value: Any) -> Optional[str]:
        """A step's value; the reason when it cannot be recorded (nothing queued then)."""
        rec = self._step_record(STEP, effect_id, name)
        rec.finish_success(value)
        try:
            self._write(rec)
        except InvalidInputError as exc:
            return str(exc)
        return None

    def step_failed(self, effect_id: int, name: str, attempt: int, error: str, exception_type: str,
                    final: bool) -> None:
        """A failed attempt of a step (``final``: no more attempts)."""
        meta: dict[str, Any] = {"exception_type": exception_type}
        if attempt > 1:
            meta["attempt"] = attempt
        if final:
            meta["final"] = True
        rec = self._step_record(STEP, effect_id, name, meta=meta)
        rec.finish_failure(error)
        self._guarded(rec)

    def value(self, kind: str, value: Any) -> None:
        """A recorded value (``now``, ``uuid``, ``random``) at a new position."""
        rec = self._step_record(kind, self.new_effect_id(), kind)
        rec.finish_success(value)
        self._guarded(rec)

    def patch(self, name: str) -> None:
        """The marker of ``ctx.patched(name)`` taking the new path, at a new position."""
        effect_id = self.new_effect_id()
        rec = new_record(self.session.run, RecordKind.PATCH, self.node)
        rec.effect_id = effect_id
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

    def effect_steps(self, effect: Effect) -> "Step":
        """The kernel's stepping code performing ``effect`` at a new position (the kernel numbers it)."""
        return effect_steps(self.rt, self.session, StepPlan(node_id=self.node, effect=effect, next_node=self.node))

    def effect_result(self) -> tuple[bool, Any]:
        """``(True, result)`` once the effect just performed completed; ``(False, None)`` when the
        run now waits on it (or failed on it)."""
        session = self.session
        if session.run.status is not RunStatus.RUNNING:
            return False, None
        queued = session.queued_records
        doc = queued[-1] if queued else None
        effect_id = session.checkpoint.effects
        if doc is None or doc.get("kind") != "effect" or doc.get("effect_id") != effect_id \
                or doc.get("status") != "completed":
            raise _Abort(VerificationFailedError(f"run {session.run_id}: effect {effect_id} completed without its "
                                                 "record"))
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


__all__ = ["Live"]
