"""Follow a run as it advances: its records as they become durable, and what its handlers stream.

:func:`follow` yields :class:`WatchEvent` objects until the run waits or ends:

- ``record``: a ledger record, expanded (the view ``get_ledger`` gives), as soon as it is
  durable — an effect's intent with no outcome yet is the effect in flight;
- ``text``: a piece of text a handler streams (an LLM reply, token by token), read from the
  store's live side channel (:mod:`abstractruntime.storage.live`), redacted like everything
  else and never part of the ledger;
- ``end``: the run waits or ended; ``state`` is its ``RunState``.

On a folder store the ledger file and the live file are polled (``interval``); on PostgreSQL a
``LISTEN`` on the store's live channel wakes the watcher as soon as a batch is durable or a
piece of text arrives (the ledger is still read every ``interval``, so a writer that sends no
notices is followed too). Watching writes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from .core.models import RunState, RunStatus
from .core.ports import LedgerHead
from .core.records import Expander

_ENDING_KINDS = frozenset({"complete", "fail", "cancel"})


@dataclass(frozen=True)
class WatchEvent:
    """One thing :func:`follow` saw: ``kind`` is ``record``, ``text`` or ``end``."""

    kind: str
    record: Optional[dict[str, Any]] = None
    text: Optional[str] = None
    effect_id: Optional[int] = None
    state: Optional[RunState] = None


class _Source:
    """Where the streamed pieces come from (folder file, or LISTEN), and how the watcher waits."""

    def __init__(self, store: Any, run_id: str) -> None:
        self._reader: Any = None
        self._listener: Any = None
        db = getattr(store, "db", None)
        if db is not None and hasattr(db, "schema"):
            from .storage.postgres.live import PostgresLiveListener

            self._listener = PostgresLiveListener(db, run_id)
            self._listener.wait(0)  # LISTEN now, before the first read of the ledger
        elif getattr(store, "root", None) is not None:
            from .storage.live import FileLiveChannel, FileLiveReader

            self._reader = FileLiveReader(FileLiveChannel(store.root).path(run_id))

    def wait(self, timeout: float) -> list[dict[str, Any]]:
        """Wait up to ``timeout`` seconds: for a notice (PostgreSQL; the pieces that came), or by sleeping."""
        if self._listener is not None:
            return [e for e in self._listener.wait(timeout) if "durable" not in e]
        time.sleep(timeout)
        return []

    def drain(self) -> list[dict[str, Any]]:
        """The pieces that arrived and were not taken yet."""
        if self._listener is not None:
            return [e for e in self._listener.wait(0) if "durable" not in e]
        return self._reader.read() if self._reader is not None else []

    def skip(self) -> None:
        """Forget what was streamed before watching began."""
        if self._reader is not None:
            self._reader.read()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()


class _Texts:
    """Streamed pieces held until their effect's intent has been shown, and shown before its outcome."""

    def __init__(self) -> None:
        self.held: dict[Any, list[str]] = {}
        self.open: set[Any] = set()  # effects whose intent was shown and whose outcome was not

    def add(self, piece: dict[str, Any]) -> None:
        if isinstance(piece.get("text"), str):
            self.held.setdefault(piece.get("effect_id"), []).append(piece["text"])

    def take(self, effect_id: Any) -> Iterator[WatchEvent]:
        for text in self.held.pop(effect_id, []):
            yield WatchEvent("text", text=text, effect_id=effect_id)

    def record(self, record: dict[str, Any]) -> Iterator[WatchEvent]:
        """The events for one record: an outcome comes after the rest of its effect's text."""
        effect_id = record.get("effect_id")
        started = record.get("kind") == "effect" and record.get("status") == "started"
        if effect_id is not None and not started and effect_id in self.open:
            yield from self.take(effect_id)
            if record.get("kind") in ("effect", "pause") and record.get("status") != "failed":
                self.open.discard(effect_id)
        yield WatchEvent("record", record=record)
        if started:
            self.open.add(effect_id)

    def flowing(self) -> Iterator[WatchEvent]:
        """The text of the effects in flight, as it arrives."""
        for effect_id in list(self.held):
            if effect_id in self.open:
                yield from self.take(effect_id)


def follow(store: Any, run_id: str, *, interval: float = 0.2, last: int = 10,
           timeout: Optional[float] = None) -> Iterator[WatchEvent]:
    """Follow ``run_id`` in ``store`` (a ``FileStore`` or ``PostgresStore``) until it waits or ends.

    The ``last`` records already written come first. The text an effect streams comes after its
    intent (the effect in flight) and before its outcome. ``timeout`` (seconds) stops following
    a run that is still running then (the last event is then not ``end``).
    """
    runtime = store.runtime()
    ledger = runtime.ledger_store
    state = runtime.get_state(run_id)  # RunNotFoundError before anything is shown
    source = _Source(store, run_id)
    texts = _Texts()
    try:
        expander = Expander(run_id)
        head, docs = ledger.read_after(run_id, LedgerHead())
        expanded = [expander.push(doc) for doc in docs]
        for record in expanded[:-last] if last > 0 else expanded:
            list(texts.record(record))  # seen, not shown: which effects are in flight
        for record in expanded[-last:] if last > 0 else []:
            yield from texts.record(record)
        source.skip()
        state = runtime.get_state(run_id)
        if state.status is not RunStatus.RUNNING:
            yield WatchEvent("end", state=state)
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        idle = 0
        while deadline is None or time.monotonic() < deadline:
            pieces = source.wait(interval)
            head, docs = ledger.read_after(run_id, head)
            # Read after the ledger: every piece an effect streamed before its outcome was recorded.
            for piece in [*pieces, *source.drain()]:
                texts.add(piece)
            ending = False
            for doc in docs:
                record = expander.push(doc)
                yield from texts.record(record)
                ending = ending or record.get("kind") in _ENDING_KINDS or record.get("status") == "waiting"
            yield from texts.flowing()
            idle = 0 if docs else idle + 1
            # A run that wrote nothing for a while may have stopped before watching began (or its
            # writer died): ask for its state now and then, not on every poll.
            if ending or (not docs and idle % 10 == 1 and _stopped(runtime, run_id)):
                state = runtime.get_state(run_id)
                if state.status is not RunStatus.RUNNING:
                    yield WatchEvent("end", state=state)
                    return
    finally:
        source.close()


def _stopped(runtime: Any, run_id: str) -> bool:
    """Whether a run that wrote nothing new is no longer running (its last record may predate watching)."""
    try:
        return bool(runtime.get_state(run_id).status is not RunStatus.RUNNING)
    except Exception:
        return False


__all__ = ["WatchEvent", "follow"]
