"""Reading a code-first run's history from its ledger, and keeping it warm per runtime.

:func:`read_history` reads a run's records (chain-checked by the store) into a
:class:`~.history.History`, following a fork to its source. :func:`history_for` gives one tick
its run's history: the durable part kept per runtime (valid while the ledger continues it: only
the records appended since are read), then the records the tick's session has not made durable
yet. :class:`Keeper` fills secret markers with their real values, loading them on first need.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..core.errors import SecretMissingError, VerificationFailedError
from ..core.ports import LedgerHead
from ..core.secret_values import SecretKeeper, shown_text
from .history import History

if TYPE_CHECKING:
    from ..core.ports import LedgerStore
    from ..core.runtime import Runtime
    from ..core.session import RunSession


def read_history(ledger: "LedgerStore", run_id: str, *, until_seq: Optional[int] = None,
                 depth: int = 0) -> History:
    """A run's history straight from its ledger (read only; up to ``until_seq``)."""
    head, docs = ledger.read_after(run_id, LedgerHead(), until_seq=until_seq)
    history = History(run_id, source_reader=_source_reader(ledger, depth))
    history.extend(docs)
    if docs:
        last = docs[-1]
        history.head = LedgerHead(int(last.get("seq") or 0), last.get("record_hash"))
    return history


def _source_reader(ledger: "LedgerStore", depth: int) -> Callable[[str, int, Optional[str]], History]:
    def read(source: str, seq: int, head_hash: Optional[str]) -> History:
        if depth > 32:
            raise VerificationFailedError(f"fork chain of run {source} is deeper than 32 forks")
        found = read_history(ledger, source, until_seq=seq, depth=depth + 1)
        if found.head.seq != seq or (head_hash is not None and found.head.head_hash != head_hash):
            raise VerificationFailedError(
                f"the run this code-first run was forked from ({source}) no longer holds the record it was forked "
                f"at (seq {seq}): its recorded steps cannot be replayed")
        return found
    return read


class Keeper:
    """Fills secret markers with their real values, loading the run's secrets on first need."""

    def __init__(self, ledger: "LedgerStore", run_id: str, keeper: Optional[SecretKeeper] = None, *,
                 shown_when_missing: bool = False) -> None:
        self._ledger, self._run_id = ledger, run_id
        self._keeper = keeper if keeper is not None else SecretKeeper()
        self._loaded = False
        self._shown = shown_when_missing

    def fill(self, marker: dict[str, Any]) -> Any:
        """The real value of ``marker`` (its shown text, for a read-only check, when it is gone)."""
        try:
            return self._keeper.fill(marker)
        except SecretMissingError:
            if not self._loaded:
                self._loaded = True
                self._keeper.load(self._ledger.get_secrets(self._run_id))
                return self.fill(marker)
            if self._shown:
                return shown_text(marker)
            raise


# The durable history of recent runs, per runtime: valid while the ledger still continues it.
_CACHE: "weakref.WeakKeyDictionary[Any, OrderedDict[str, History]]" = weakref.WeakKeyDictionary()
_CACHE_GUARD = threading.Lock()
CACHED_RUNS = 64


def history_for(rt: "Runtime", session: "RunSession") -> History:
    """The history of the session's run for this tick: the durable records (cached per runtime,
    read from where the cache ends), then the records this session has not made durable yet."""
    run_id, durable = session.run_id, session.durable
    ledger = rt.ledger_store
    with _CACHE_GUARD:
        per_runtime = _CACHE.get(rt)
        cached = per_runtime.pop(run_id, None) if per_runtime is not None else None
    base = _continued(ledger, run_id, cached, durable) if cached is not None else None
    if base is None:
        base = read_history(ledger, run_id)
    base.head = durable
    with _CACHE_GUARD:
        per_runtime = _CACHE.setdefault(rt, OrderedDict())
        per_runtime[run_id] = base
        while len(per_runtime) > CACHED_RUNS:
            per_runtime.popitem(last=False)
    tick = base.overlay()
    tick.extend(session.queued_records, keep=False)
    return tick


def _continued(ledger: "LedgerStore", run_id: str, cached: History, durable: LedgerHead) -> Optional[History]:
    """``cached`` extended to ``durable``, or ``None`` when the ledger does not continue it."""
    head = cached.head
    if head.seq > durable.seq:
        return None
    if head.seq == durable.seq:
        return cached if head.head_hash == durable.head_hash else None
    _, docs = ledger.read_after(run_id, head)
    if not docs or docs[0].get("seq") != head.seq + 1 or docs[0].get("prev_hash") != head.head_hash:
        return None  # read from the start (the store could not continue from there): rebuild
    cached.extend(docs)
    return cached


def forget(rt: "Runtime", run_id: str) -> None:
    """Drop the cached history of ``run_id`` (its ledger changed in a way the cache cannot follow)."""
    with _CACHE_GUARD:
        per_runtime = _CACHE.get(rt)
        if per_runtime is not None:
            per_runtime.pop(run_id, None)


__all__ = ["CACHED_RUNS", "Keeper", "forget", "history_for", "read_history"]
