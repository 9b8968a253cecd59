"""The live side channel on PostgreSQL: ``NOTIFY`` on the store's live channel, ``LISTEN`` to follow.

Each notification is one JSON object naming its run (``"r"``): a piece of streamed text
``{"r", "e": effect_id, "a": attempt, "t": text}``, the end of a streamed attempt
``{"r", "e", "a", "done": true}``, or a durable batch ``{"r", "s": seq}`` (a watcher then reads
the ledger rows after the last one it showed). Text longer than a payload may carry is cut
into several notifications (PostgreSQL refuses payloads of 8,000 bytes or more). Nothing is
stored: a watcher that was not listening misses the pieces, never a record.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:
    from .db import PgDatabase

# Bytes of text per notification: the JSON around it and escapes stay well under 8,000.
MAX_PIECE_BYTES = 3000


def live_channel(schema: str) -> str:
    """The NOTIFY channel of a store's live pieces (an identifier of at most 63 characters)."""
    return "live_" + hashlib.sha256(schema.encode("utf-8")).hexdigest()[:16]


def pieces(text: str, limit: int = MAX_PIECE_BYTES) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` UTF-8 bytes, never inside a character."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode("utf-8"))
        if size + width > limit and current:
            out.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    if current:
        out.append("".join(current))
    return out


class PostgresLiveChannel:
    """The observer that sends a store's live notifications."""

    def __init__(self, db: "PgDatabase") -> None:
        self.db = db
        self.channel = live_channel(db.schema)
        self._streamed: set[tuple[str, int, int]] = set()
        self._guard = threading.Lock()

    def _notify(self, payload: Mapping[str, Any]) -> None:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        try:
            with self.db.connection() as conn:
                conn.execute("SELECT pg_notify(%s, %s)", [self.channel, text])
        except Exception:  # best effort: a lost notice costs a watcher a poll, never a record
            pass

    def progress(self, run_id: str, effect_id: int, attempt: int, data: Mapping[str, Any]) -> None:
        """Send a piece of streamed text (in several notifications when it is long)."""
        text = data.get("text")
        if not isinstance(text, str) or not text:
            return
        with self._guard:
            self._streamed.add((run_id, effect_id, attempt))
        for piece in pieces(text):
            self._notify({"r": run_id, "e": effect_id, "a": attempt, "t": piece})

    def effect_started(self, run_id: str, effect_id: int, effect_type: str, attempt: int, node_id: str) -> Any:
        """Remember the attempt, to mark the end of one that streamed."""
        return (run_id, effect_id, attempt)

    def effect_ended(self, token: Any, status: str, ext: Any, error: Optional[str]) -> None:
        """Mark the end of an attempt that streamed."""
        with self._guard:
            streamed = token in self._streamed
            self._streamed.discard(token)
        if streamed:
            run_id, effect_id, attempt = token
            self._notify({"r": run_id, "e": effect_id, "a": attempt, "done": True, "status": status})

    def durable(self, run_id: str, seq: int) -> None:
        """Tell watchers that the run's records up to ``seq`` are durable."""
        self._notify({"r": run_id, "s": seq})


class PostgresLiveListener:
    """A ``LISTEN`` on a store's live channel, filtered to one run."""

    def __init__(self, db: "PgDatabase", run_id: str) -> None:
        self.db, self.run_id = db, run_id
        self._conn: Optional[Any] = None

    def _listening(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = self.db.connect()
            conn.execute(f'LISTEN "{live_channel(self.db.schema)}"')
            self._conn = conn
        return self._conn

    def wait(self, timeout: float) -> list[dict[str, Any]]:
        """The run's notifications that arrive within ``timeout`` seconds (all that are queued then)."""
        conn = self._listening()
        events: list[dict[str, Any]] = []
        try:
            for note in conn.notifies(timeout=max(timeout, 0.0), stop_after=1):
                events.extend(self._parse(note.payload))
            for note in conn.notifies(timeout=0):
                events.extend(self._parse(note.payload))
        except self.db.psycopg.Error:
            self.close()  # listen again on the next call; meanwhile the caller reads the ledger
        return events

    def _parse(self, payload: str) -> list[dict[str, Any]]:
        try:
            event = json.loads(payload)
        except ValueError:
            return []
        if not isinstance(event, dict) or event.get("r") != self.run_id:
            return []
        out: dict[str, Any] = {"effect_id": event.get("e"), "attempt": event.get("a")}
        if "t" in event:
            out["text"] = event["t"]
        elif event.get("done"):
            out.update(done=True, status=event.get("status"))
        elif "s" in event:
            out = {"durable": event["s"]}
        return [out]

    def close(self) -> None:
        """Stop listening."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


__all__ = ["MAX_PIECE_BYTES", "PostgresLiveChannel", "PostgresLiveListener", "live_channel", "pieces"]
