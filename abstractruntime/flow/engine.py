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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.drive import Request, settle_in_thread
from ..core.errors import AbstractRuntimeError, InvalidInputError, NondeterminismError
from ..core.models import RecordKind, RunStatus
from ..core.session import fail_run, new_record
from .load import Keeper, history_for
from .live import Live
from .requests import _Abort, round_trip
from .run import FlowRun
from .spec import Workflow
from .typed import to_json

if TYPE_CHECKING:
    from ..core.drive import Step
    from ..core.runtime import Runtime
    from ..core.session import RunSession


@dataclass
class FlowCall(Request):
    """Run the workflow's function (the request :func:`flow_steps` yields to the kernel's driver)."""

    flow_run: FlowRun

    def run_sync(self) -> tuple[str, Any]:
        return self.flow_run.execute()

    async def run_async(self) -> tuple[str, Any]:
        if self.flow_run.flow.is_async:
            return await self.flow_run.aexecute()
        # A plain def workflow blocks on its steps: it runs in a worker thread, which a
        # cancellation waits for (its records are written before the run's lock is given up).
        result: tuple[str, Any] = await settle_in_thread(self, self.flow_run.execute)
        return result


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
    try:
        value = to_json(value)  # a dataclass (or any value typed.to_json knows) as JSON holds it
        output = value if isinstance(value, dict) else {"result": value}
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
