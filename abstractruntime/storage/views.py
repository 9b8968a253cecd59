"""The run as readers see it, from a stored checkpoint (secrets shown redacted, stored values
resolved) or from its ledger (a run whose ledger went past its checkpoint)."""

from __future__ import annotations

from typing import Any, Optional

from ..core.markers import run_value
from ..core.models import RunState
from ..core.ports import LedgerStore, RunStore, StoredCheckpoint
from ..core.records import JCS_FORMATS
from ..core.secret_values import shown_text
from ..core.values import UndefinedValueError, ValueTable
from ..core.wal import record_parts


def value_table(ledger: LedgerStore, run_id: str) -> ValueTable:
    """Every stored value a run's ledger defines."""
    table = ValueTable()
    for doc in ledger.stored(run_id):
        if doc.get("format") in JCS_FORMATS:
            for part in record_parts(doc):
                table.collect(part, int(doc.get("seq") or 0))
    return table


def resolved_view(checkpoint: StoredCheckpoint, ledger: LedgerStore) -> RunState:
    """The checkpoint's run with its stored values read back from ``ledger`` (secrets shown redacted).

    A value the ledger does not define stays a ``{"$v": id}`` reference (the checkpoint is not
    proven here: readers only show it).
    """
    run_doc: dict[str, Any] = run_value(checkpoint.run_doc)  # (its vars root holds names)
    table = ValueTable()
    if table.closure(run_doc):
        table = value_table(ledger, checkpoint.run_id)
    try:
        return RunState.from_dict(table.resolve(run_doc, shown_text))
    except UndefinedValueError:
        return checkpoint.shown_run()


def ledger_view(runs: RunStore, ledger: LedgerStore, run_id: str) -> Optional[RunState]:
    """The run as its ledger says — the proven checkpoint with the records after it replayed —
    shown as an index row shows a run (secrets redacted, stored values as references); ``None``
    for a run whose records are older formats (its checkpoint is what readers go by)."""
    from ..core.recovery import open_run

    opened = open_run(runs, ledger, run_id, for_writing=False)
    if opened.legacy:
        return None
    return StoredCheckpoint(state=opened.parts.image.document(), ledger=opened.head).shown_run()


__all__ = ["ledger_view", "resolved_view", "value_table"]
