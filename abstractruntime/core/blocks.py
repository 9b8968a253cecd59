"""Blocked runs: a code-first run whose code diverged from its history, noted beside the ledger.

When the code of a code-first workflow asks, at some position of a run, for something else
than the run recorded there, nothing is written to the run
(:class:`~abstractruntime.core.errors.NondeterminismError`). The run store keeps a *block
mark* instead (``RunStore.put_block``): ``runs list`` shows the run as blocked, and workers
skip it while the code that diverged is still the code they would run — no retry loop.

A mark is a hint, never evidence: it names the ledger head it was made at, and it holds only
while the run's ledger is still there (any record appended since — an answer with fixed code,
a cancel, a restore — makes it stale, and stale marks are ignored). Deleting one costs one
more replay that finds the divergence again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from .clock import utc_now_iso
from .ports import LedgerHead

if TYPE_CHECKING:
    from .errors import NondeterminismError
    from .session import RunSession

BLOCK_FORMAT = 1


def block_mark(session: "RunSession", error: "NondeterminismError", *, code_sha256: Optional[str]) -> dict[str, Any]:
    """The mark of a run blocked by ``error`` at the session's durable ledger head."""
    head = session.durable
    recorded = (session.checkpoint.workflow or {}).get("sha256")
    details = error.details
    return {
        "format": BLOCK_FORMAT, "run_id": session.run_id, "workflow_id": session.run.workflow_id,
        "position": details.get("position"), "recorded": details.get("recorded"), "code": details.get("code"),
        "message": error.message, "code_sha256": code_sha256, "recorded_sha256": recorded,
        "seq": head.seq, "head_hash": head.head_hash, "at": utc_now_iso(),
    }


def is_fresh(mark: Any, head: LedgerHead) -> bool:
    """True when ``mark`` was made at ``head`` (nothing was recorded in the run since)."""
    return isinstance(mark, dict) and mark.get("seq") == head.seq and mark.get("head_hash") == head.head_hash


def current_block(run_store: Any, run_id: str, head: LedgerHead) -> Optional[dict[str, Any]]:
    """The run's block mark when it still holds at ``head`` (the run's current ledger head)."""
    try:
        mark = run_store.get_block(run_id)
    except Exception:  # a hint only: an unreadable mark blocks nothing
        return None
    return mark if is_fresh(mark, head) else None


def blocked_runs(run_store: Any, ledger: Any, run_ids: Any = None) -> dict[str, dict[str, Any]]:
    """The runs (of ``run_ids``, default: all) blocked now: their mark still holds at their ledger head."""
    from .ports import Capability, has_capability

    try:
        marks = run_store.list_blocks()
    except Exception:  # hints only
        return {}
    wanted = set(run_ids) if run_ids is not None else None
    found: dict[str, dict[str, Any]] = {}
    for run_id, mark in marks.items():
        if wanted is not None and run_id not in wanted:
            continue
        try:
            head = ledger.peek_head(run_id) if has_capability(ledger, Capability.PEEK_HEAD) else ledger.head(run_id)
        except Exception:
            continue
        if is_fresh(mark, head):
            found[run_id] = mark
    return found


def skip_blocked(run_store: Any, checkpoint: Any, workflow: Any) -> bool:
    """Whether a worker should pass over this run: it is blocked, and ``workflow`` is the very
    code that diverged (other code — a fix deployed — is tried)."""
    if not callable(getattr(workflow, "flow_steps", None)):
        return False
    mark = current_block(run_store, checkpoint.run.run_id, checkpoint.ledger)
    if mark is None:
        return False
    source = getattr(workflow, "source", None)
    return mark.get("code_sha256") == (source.sha256 if source is not None else None)


__all__ = ["BLOCK_FORMAT", "block_mark", "blocked_runs", "current_block", "is_fresh", "skip_blocked"]
