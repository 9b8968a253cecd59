"""Schedules in a folder store: ``schedules/<name>/log.jsonl`` and ``schedules/<name>/ticks/<day>/<tick>.json``.

- ``log.jsonl`` is the schedule's append-only log (``added``, ``paused``, ``resumed``,
  ``removed``), one JSON object per line, appended under an ``flock`` of ``.lock`` beside it
  (the check that the name is free, or the schedule exists, runs under the same lock). A
  last line without its newline is a torn append: ignored, and cut by the next append; a bad
  line before it is a
  :class:`~abstractruntime.core.errors.CorruptRecordError` naming file and line.
- ``ticks/<YYYYMMDD>/<YYYYMMDDTHHMMSSZ>.json`` is the one decision for that tick (a folder per
  UTC day, so a pass reads the latest day, not a year of ticks). It is written whole to
  a temporary file, then published with ``link(2)``, which fails when the name exists: of
  two workers deciding the same tick, exactly one publishes, and a reader never sees half a
  decision. A temporary file left by a worker killed before it published is removed by a
  later decision (of that day or the next that has ticks) once its writer is gone.

Standard library only; see :mod:`abstractruntime.scheduler.schedules` for what the records mean.
"""

from __future__ import annotations

import errno
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ..core.canonical import canonical_json
from ..core.clock import parse_iso
from ..core.errors import CorruptRecordError, InvalidInputError, StorageError
from ..core.json_codec import loads_strict
from .fsio import (FILE_MODE, FileLock, append_bytes, child_path, ensure_dir, fsync_dir, open_append, read_bytes,
                   refuse_symlink, remove_stale_tmp_files)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_KEY = re.compile(r"\d{8}T\d{6}Z")
_DAY = re.compile(r"\d{8}")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(f"bad schedule name {name!r}: use letters, digits, '-' and '_' (at most 64, "
                                "starting with a letter or digit)")
    return name


class FileScheduleStore:
    """The ``schedules/`` folder of a store (``FileStore.schedules``)."""

    def __init__(self, directory: str | os.PathLike[str], *, durability: str = "fsync") -> None:
        self.directory = Path(directory)
        self._durable = durability == "fsync"

    def _dir(self, name: str, *, create: bool = False) -> Path:
        if create:  # reads create nothing
            ensure_dir(self.directory, durable=self._durable)
        return child_path(self.directory, _check_name(name))

    def names(self) -> list[str]:
        try:
            entries = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        return [e for e in entries if _NAME.fullmatch(e) and (self.directory / e / "log.jsonl").is_file()]

    def records(self, name: str) -> list[dict[str, Any]]:
        path = self._dir(name) / "log.jsonl"
        try:
            data = read_bytes(path)
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")
        out: list[dict[str, Any]] = []
        for number, line in enumerate(lines[:-1], start=1):  # the part after the last newline: a torn append
            if not line.strip():
                continue
            try:
                record = loads_strict(line)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise CorruptRecordError(f"not valid JSON ({exc})", path=str(path),
                                         line=number) from None
            if not isinstance(record, dict) or record.get("format") != 1 or not isinstance(record.get("event"), str):
                raise CorruptRecordError("not a schedule record", path=str(path), line=number)
            out.append(record)
        return out

    def append(self, name: str, record: dict[str, Any],
               check: Optional[Callable[[list[dict[str, Any]]], None]] = None) -> None:
        folder = ensure_dir(self._dir(name, create=True), durable=self._durable)
        path = folder / "log.jsonl"
        line = canonical_json(record) + b"\n"
        with FileLock(folder / ".lock"):
            if check is not None:
                check(self.records(name))
            fd = open_append(path)
            try:
                data = read_bytes(path)
                if data and not data.endswith(b"\n"):
                    # A torn append (its writer was killed): never read, so cut before ours follows it.
                    os.ftruncate(fd, data.rfind(b"\n") + 1)
                append_bytes(fd, line, path=path, durable=self._durable)
            finally:
                os.close(fd)
            if self._durable:
                fsync_dir(folder)

    def decide(self, name: str, key: str, decision: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        if not _KEY.fullmatch(key):
            raise InvalidInputError(f"bad tick key {key!r}")
        ticks = ensure_dir(self._dir(name, create=True) / "ticks" / key[:8], durable=self._durable)
        final = ticks / f"{key}.json"
        tmp = ticks / f".{key}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
            try:
                os.write(fd, canonical_json(decision) + b"\n")
                if self._durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, final)  # fails if the tick is decided: the first link wins
                won = True
            except FileExistsError:
                won = False
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                won = False
            else:
                raise StorageError(f"Cannot write {final}: {exc.strerror or exc}") from exc
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if won:
            if self._durable:
                fsync_dir(ticks)
            self._sweep(ticks.parent, key[:8])
            return decision, True
        return self._read_decision(final, key), False

    @staticmethod
    def _sweep(ticks: Path, day: str) -> None:
        """Remove the temporary decision files a killed worker left in the folder of ``day`` and
        of the day before it that has ticks (a daily schedule's next decision is in a new folder)."""
        try:
            days = sorted(e for e in os.listdir(ticks) if _DAY.fullmatch(e) and e <= day)
        except OSError:
            return
        for folder in days[-2:]:
            remove_stale_tmp_files(ticks / folder)

    def _read_decision(self, path: Path, key: str) -> dict[str, Any]:
        refuse_symlink(path)
        try:
            doc = loads_strict(read_bytes(path))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise CorruptRecordError(f"not valid JSON ({exc})", path=str(path)) from None
        if not isinstance(doc, dict):
            raise CorruptRecordError("not a tick decision", path=str(path))
        try:
            placed = parse_iso(str(doc.get("tick"))).strftime("%Y%m%dT%H%M%SZ") == key
        except ValueError:
            placed = False
        if not placed:  # its content must agree with its place: no tick moved under another's name
            raise CorruptRecordError(f"names tick {doc.get('tick')!r}, not the tick of its file name",
                                     path=str(path))
        return doc

    def recent(self, name: str, limit: int) -> list[dict[str, Any]]:
        ticks = self._dir(name) / "ticks"
        try:
            days = sorted((e for e in os.listdir(ticks) if _DAY.fullmatch(e)), reverse=True)
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        for day in days:  # latest day first: a pass reads a day or two, however long the schedule ran
            keys = sorted((e[:-5] for e in os.listdir(ticks / day)
                           if e.endswith(".json") and _KEY.fullmatch(e[:-5]) and e.startswith(day)), reverse=True)
            for key in keys:
                if len(out) >= limit:
                    return out
                out.append(self._read_decision(ticks / day / f"{key}.json", key))
        return out


__all__ = ["FileScheduleStore"]
