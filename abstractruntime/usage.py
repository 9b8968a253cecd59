"""What runs spent, read back from their ledgers: totals per run, per model, per workflow, per day.

Every ``llm_call`` outcome carries ``ext.usage`` (:mod:`abstractruntime.core.budget`); this
module adds those records up. A run's own totals are also kept in its state
(``metadata["usage"]``, including what its finished children reported), which is what
``runs show``, ``runs list --json`` and the report show without reading the whole ledger.

:func:`usage_rows` is what ``abstractruntime usage`` prints: one row per group (``model``:
``provider/model``; ``workflow``; ``day``: the UTC date of the record; ``run``), each with
``calls``, ``input_tokens``, ``output_tokens``, ``tokens``, ``cost`` (``None`` when no call of
the group was priced) and ``unpriced`` (calls without a price). Reading writes nothing.
"""

from __future__ import annotations

from dataclasses import field
from .core.fastclass import dataclass
from typing import Any, Iterable, Iterator, Mapping, Optional

from .core.budget import BUDGET_KEY, check_budget
from .core.usage_totals import totals_of
from .core.errors import InvalidInputError

GROUPS = ("model", "workflow", "day", "run")


@dataclass
class UsageRow:
    """The sums of one group."""

    key: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Optional[float] = None
    unpriced: int = 0
    runs: set[str] = field(default_factory=set)

    def add(self, usage: Mapping[str, Any], run_id: str) -> None:
        """Add one call's ``ext.usage``."""
        self.calls += 1
        self.input_tokens += _int(usage.get("input_tokens"))
        self.output_tokens += _int(usage.get("output_tokens"))
        cost = usage.get("cost")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            self.cost = round((self.cost or 0.0) + float(cost), 10)
        else:
            self.unpriced += 1
        self.runs.add(run_id)

    def to_dict(self) -> dict[str, Any]:
        """The row as ``--json`` prints it."""
        return {"key": self.key, "calls": self.calls, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "tokens": self.input_tokens + self.output_tokens,
                "cost": self.cost, "unpriced": self.unpriced, "runs": len(self.runs)}


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class Call:
    """One recorded LLM call: its run, workflow, when, and its ``ext.usage``."""

    run_id: str
    workflow_id: str
    at: str
    usage: Mapping[str, Any]


def calls_of(runtime: Any, run_id: str) -> Iterator[Call]:
    """The LLM calls recorded in one run's ledger (every record carrying ``ext.usage``)."""
    workflow_id = ""
    for record in runtime.get_ledger(run_id):
        if record.get("kind") == "start":
            result = record.get("result") or {}
            workflow_id = str(result.get("workflow_id") or "") if isinstance(result, dict) else ""
        ext = record.get("ext")
        usage = ext.get("usage") if isinstance(ext, dict) else None
        if isinstance(usage, dict):
            yield Call(run_id, workflow_id, str(record.get("at") or ""), usage)


def tree_of(store: Any, run_id: str) -> list[str]:
    """``run_id`` and every descendant run (children started with ``start_subworkflow``), parent first."""
    seen, queue = [run_id], [run_id]
    while queue:
        current = queue.pop(0)
        for child in store.runs.list_children(parent_run_id=current):
            if child.run_id not in seen:
                seen.append(child.run_id)
                queue.append(child.run_id)
    return seen


def _key(call: Call, by: str) -> str:
    if by == "workflow":
        return call.workflow_id or "?"
    if by == "day":
        return call.at[:10] or "?"
    if by == "run":
        return call.run_id
    provider, model = call.usage.get("provider"), call.usage.get("model")
    return f"{provider}/{model}" if provider else str(model or "?")


def usage_rows(runtime: Any, run_ids: Iterable[str], *, by: str = "model") -> tuple[list[UsageRow], UsageRow]:
    """The rows grouped ``by`` (``model``, ``workflow``, ``day`` or ``run``) and their total."""
    if by not in GROUPS:
        raise InvalidInputError(f"--by must be one of: {', '.join(GROUPS)} (got {by!r})")
    rows: dict[str, UsageRow] = {}
    total = UsageRow("total")
    for run_id in run_ids:
        for call in calls_of(runtime, run_id):
            key = _key(call, by)
            rows.setdefault(key, UsageRow(key)).add(call.usage, run_id)
            total.add(call.usage, run_id)
    return sorted(rows.values(), key=lambda r: r.key), total


def run_totals(metadata: Any) -> Optional[dict[str, Any]]:
    """A run's totals and budget from its metadata, as ``runs show`` prints them (``None`` when it
    spent nothing and has no budget)."""
    metadata = metadata if isinstance(metadata, Mapping) else {}
    totals = totals_of(metadata)
    try:
        budget = check_budget(metadata.get(BUDGET_KEY))
    except InvalidInputError:
        budget = None
    if not totals["calls"] and budget is None:
        return None
    out: dict[str, Any] = {k: v for k, v in totals.items() if k != "prices"}
    out["tokens"] = totals["input_tokens"] + totals["output_tokens"]
    if budget is not None:
        out["budget"] = budget
    return out


def stored_totals(store: Any, run_id: str) -> Optional[dict[str, Any]]:
    """A run's totals from its stored checkpoint (a cache, as ``runs list`` reads; ``None`` if none)."""
    try:
        stored = store.runs.load_checkpoint(run_id)
    except Exception:
        return None
    if stored is None:
        return None
    kernel = stored.state.get("kernel") if isinstance(stored.state, dict) else None
    return run_totals(kernel.get("metadata") if isinstance(kernel, dict) else None)


def describe_totals(totals: Mapping[str, Any]) -> str:
    """``3 calls, 1,234 tokens (1,000 in, 234 out), cost 0.0021`` — one line."""
    text = (f"{totals.get('calls', 0)} call{'s' if totals.get('calls', 0) != 1 else ''}, "
            f"{totals.get('tokens', 0):,} tokens ({totals.get('input_tokens', 0):,} in, "
            f"{totals.get('output_tokens', 0):,} out)")
    if totals.get("cost") is not None:
        text += f", cost {totals['cost']:.6f}".rstrip("0").rstrip(".")
    if totals.get("unpriced"):
        text += f" ({totals['unpriced']} unpriced)"
    return text


__all__ = ["Call", "GROUPS", "UsageRow", "calls_of", "describe_totals", "run_totals", "stored_totals", "tree_of",
           "usage_rows"]
