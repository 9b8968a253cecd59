"""Another run's spend, read from its ledger: what a parent counts of its children's LLM calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from .models import WaitState
from .recovery import open_run
from .usage_totals import count_reports, report_of, totals_of

if TYPE_CHECKING:
    from .session import RunSession


def run_now(ports: Any, run_id: str) -> Optional[tuple[dict[str, Any], bool]]:
    """Another run's totals as its ledger holds them now — also what a killed writer left
    unsettled — and whether it finished; ``None`` when it cannot be read (nothing counted)."""
    try:
        opened = open_run(ports.runs, ports.ledger, run_id, for_writing=False)
    except Exception:  # a run that cannot be read counts nothing; its own ledger still holds its spend
        return None
    totals = totals_of(opened.checkpoint.metadata)
    count_reports(totals, opened.parts.unsettled)
    return totals, opened.checkpoint.run.status.is_terminal


def child_usage_of(session: "RunSession", wait: WaitState) -> Optional[dict[str, Any]]:
    """The totals of the finished child a subworkflow wait names (read from its ledger), or ``None``."""
    child_id = (wait.details or {}).get("sub_run_id") if isinstance(wait.details, dict) else None
    if not isinstance(child_id, str):
        return None
    found = run_now(session.ports, child_id)
    if found is None or not found[1]:
        return None
    return report_of(found[0], child_id)


__all__ = ["child_usage_of", "run_now"]
