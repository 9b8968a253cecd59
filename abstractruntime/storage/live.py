"""The live side channel: what a run's handlers stream while they work, never the ledger.

A handler publishes transient progress (``current_effect().progress({"text": ...})``: an LLM
reply token by token); the runtime redacts it and hands it to its observers. The live
channel is the observer that makes it visible to other processes (``abstractruntime watch``):

- **folder store**: ``runs/<run_id>/live.jsonl``, one JSON line per piece
  ``{"effect_id", "attempt", "text"}`` and ``{"effect_id", "attempt", "done": true}`` when the
  attempt ends. The file holds one attempt at a time (it starts over with the next attempt
  that streams), is never fsynced, and is nobody's evidence: deleting it is safe.
- **PostgreSQL**: ``NOTIFY`` on the store's live channel, the text cut into payloads under
  the server's 8,000-byte limit; also a notice each time a batch of records is durable, so
  a watcher wakes at once instead of polling (:mod:`abstractruntime.storage.postgres.live`).

Only the final message is recorded (in the effect's result): the live channel may lose
pieces (a watcher that starts late, a full disk) without any consequence for the run.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Mapping, Optional

from ..core.ids import validate_id
from .fsio import FILE_MODE, child_path

LIVE_FILE = "live.jsonl"


class FileLiveChannel:
    """The live channel of a folder store: an observer that writes ``runs/<id>/live.jsonl``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._current: dict[str, tuple[int, int]] = {}  # run id -> the (effect, attempt) in the file
        self._guard = threading.Lock()

    def path(self, run_id: str) -> Path:
        """The live file of ``run_id``."""
        return child_path(self.root, "runs", validate_id(run_id, "run id"), LIVE_FILE)

    def progress(self, run_id: str, effect_id: int, attempt: int, data: Mapping[str, Any]) -> None:
        """Append one piece (the first piece of an attempt starts the file over)."""
        text = data.get("text")
        if not isinstance(text, str) or not text:
            return
        line = json.dumps({"effect_id": effect_id, "attempt": attempt, "text": text}, ensure_ascii=False)
        self._write(run_id, (effect_id, attempt), line)

    def effect_started(self, run_id: str, effect_id: int, effect_type: str, attempt: int, node_id: str) -> Any:
        """Remember the attempt, to mark its end (only an attempt that streamed writes anything)."""
        return (run_id, effect_id, attempt)

    def effect_ended(self, token: Any, status: str, ext: Any, error: Optional[str]) -> None:
        """Mark the end of an attempt that streamed."""
        run_id, effect_id, attempt = token
        with self._guard:
            streamed = self._current.get(run_id) == (effect_id, attempt)
        if streamed:
            line = json.dumps({"effect_id": effect_id, "attempt": attempt, "done": True, "status": status})
            self._write(run_id, (effect_id, attempt), line)
            with self._guard:  # a worker serves many runs: keep nothing of a run between its calls
                if self._current.get(run_id) == (effect_id, attempt):
                    del self._current[run_id]

    def _write(self, run_id: str, attempt: tuple[int, int], line: str) -> None:
        with self._guard:
            fresh = self._current.get(run_id) != attempt
            self._current[run_id] = attempt
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if fresh else os.O_APPEND)
            try:
                fd = os.open(self.path(run_id), flags, FILE_MODE)
            except OSError:
                return  # the live channel is best effort: the run never depends on it
            try:
                os.write(fd, (line + "\n").encode("utf-8"))
            except OSError:
                pass
            finally:
                os.close(fd)


class FileLiveReader:
    """Reads what :class:`FileLiveChannel` wrote for one run, from where the last read stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity: Optional[tuple[int, int]] = None
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        """The pieces written since the last call (the file started over: from its start)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return []
        try:
            info = os.fstat(fd)
            identity = (info.st_dev, info.st_ino)
            if identity != self._identity or info.st_size < self._offset:
                self._identity, self._offset, self._partial = identity, 0, b""
            os.lseek(fd, self._offset, os.SEEK_SET)
            data = b""
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        events: list[dict[str, Any]] = []
        for raw in lines:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


def live_channel_for(store: Any) -> Optional[Any]:
    """The live channel observer of a ``FileStore`` or ``PostgresStore`` (``None`` for others)."""
    db = getattr(store, "db", None)
    if db is not None and hasattr(db, "schema"):
        from .postgres.live import PostgresLiveChannel

        return PostgresLiveChannel(db)
    root = getattr(store, "root", None)
    if isinstance(root, Path):
        return FileLiveChannel(root)
    return None


__all__ = ["FileLiveChannel", "FileLiveReader", "LIVE_FILE", "live_channel_for"]
