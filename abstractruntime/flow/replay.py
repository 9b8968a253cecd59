"""Checking new workflow code against recorded runs, without writing anything: the deploy check.

``abstractruntime replay --workflow NEW.py [RUN...|--all|--status S]`` (and :func:`check_file`)
runs each recorded run of NEW.py's workflows against the new code:

- a **code-first** run's function runs from the top over the run's history (nothing is
  executed: a position the history holds returns its recorded value, the first one past it
  ends the check). It is *compatible* when every recorded position is asked for, in order,
  with the same kind and name; otherwise it *diverges at position N: recorded X, code Y*. A
  run that ended (completed, or failed in its code) must end at the same place;
- a **graph** run is compatible when every node it can still enter exists in the new code.

Nothing is written: runs are read from their ledgers (their checkpoints are not used, nor
their secrets released), and no block mark is made. The file is imported because the
operator named it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional

from ..core.errors import AbstractRuntimeError
from ..core.recovery import open_run
from ..core.upgrade import needed_nodes
from .run import FlowRun
from .load import Keeper, read_history
from .spec import is_code_first


@dataclass
class ReplayResult:
    """What checking one run against new code found."""

    run_id: str
    workflow_id: str
    status: str
    compatible: bool
    style: str = "code-first"
    checked: int = 0
    position: Optional[int] = None
    recorded: Optional[str] = None
    code: Optional[str] = None
    message: str = "compatible"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``replay --json``)."""
        return asdict(self)


def check_run(workflow: Any, store: Any, run_id: str) -> ReplayResult:
    """Check run ``run_id`` of ``store`` (anything with ``runs`` and ``ledger``) against ``workflow``."""
    opened = open_run(store.runs, store.ledger, run_id, for_writing=False)
    checkpoint = opened.checkpoint
    run = checkpoint.run
    status = run.status.value
    if run.workflow_id != workflow.workflow_id:
        return ReplayResult(run_id, run.workflow_id, status, False, checked=0,
                            message=f"run of workflow '{run.workflow_id}', not '{workflow.workflow_id}'")
    if not is_code_first(workflow):
        needed = needed_nodes(checkpoint)
        missing = sorted(needed - set(workflow.nodes))
        if missing:
            names = ", ".join(repr(n) for n in missing)
            return ReplayResult(run_id, run.workflow_id, status, False, style="graph", checked=len(needed),
                                message=f"needs node(s) {names}, which the code does not have")
        return ReplayResult(run_id, run.workflow_id, status, True, style="graph", checked=len(needed))
    history = read_history(store.ledger, run_id)
    keeper = Keeper(store.ledger, run_id, shown_when_missing=True)
    ended = status if status == "completed" or (status == "failed" and checkpoint.pending is None) else None
    flow_run = FlowRun(workflow, history, run_id, keeper.fill, None, inputs=dict(run.vars), ended=ended)
    how, value = flow_run.execute()
    checked = min(flow_run.next_position - 1, history.last)
    if how == "diverged":
        details = value.details
        checked = max(0, int(details.get("position") or 1) - 1)  # the positions that matched before it
        return ReplayResult(run_id, run.workflow_id, status, False, checked=checked,
                            position=details.get("position"), recorded=details.get("recorded"),
                            code=details.get("code"),
                            message=f"diverges at position {details.get('position')}: recorded "
                                    f"{details.get('recorded')}, code {details.get('code')}")
    if how == "abort":
        return ReplayResult(run_id, run.workflow_id, status, False, checked=checked,
                            message=f"cannot be checked: {value}")
    if how == "raised" and status == "completed":
        position = history.last + 1
        return ReplayResult(run_id, run.workflow_id, status, False, checked=checked, position=position,
                            recorded="the run's end (completed)", code=f"raised {type(value).__name__}",
                            message=f"diverges at position {position}: recorded the run's end (completed), "
                                    f"code raised {type(value).__name__}: {value}")
    return ReplayResult(run_id, run.workflow_id, status, True, checked=checked)


def check_runs(workflows: Iterable[Any], store: Any, run_ids: Iterable[str]) -> list[ReplayResult]:
    """Check each run against the workflow (of ``workflows``) with its recorded id."""
    by_id: dict[str, Any] = {}
    for spec in workflows:
        by_id.setdefault(spec.workflow_id, spec)
    results: list[ReplayResult] = []
    for run_id in run_ids:
        try:
            opened = open_run(store.runs, store.ledger, run_id, for_writing=False)
        except AbstractRuntimeError as exc:
            results.append(ReplayResult(run_id, "?", "?", False, message=f"cannot be read: {exc}"))
            continue
        run = opened.checkpoint.run
        spec = by_id.get(run.workflow_id)
        if spec is None:
            known = ", ".join(sorted(by_id)) or "none"
            results.append(ReplayResult(run_id, run.workflow_id, run.status.value, False,
                                        message=f"workflow '{run.workflow_id}' is not in the file (it has: {known})"))
            continue
        try:
            results.append(check_run(spec, store, run_id))
        except AbstractRuntimeError as exc:
            results.append(ReplayResult(run_id, run.workflow_id, run.status.value, False,
                                        message=f"cannot be checked: {exc}"))
    return results


def runs_of(store: Any, workflow_ids: Iterable[str], *, status: Optional[str] = None) -> list[str]:
    """The ids of the store's runs of these workflows (with this status), without writing anything."""
    from ..storage.postgres.copy import run_ids

    wanted = set(workflow_ids)
    found: list[str] = []
    for run_id in run_ids(store):
        try:
            run = open_run(store.runs, store.ledger, run_id, for_writing=False).checkpoint.run
        except AbstractRuntimeError:
            continue  # `verify` reports what cannot be read
        if run.workflow_id in wanted and (status is None or run.status.value == status):
            found.append(run_id)
    return found


__all__ = ["ReplayResult", "check_run", "check_runs", "runs_of"]
