"""``PostgresRunStore``: run checkpoints in the ``runs`` table, one writer per run by advisory lock.

A row holds the checkpoint (exactly as written: the one copy) and the columns the scheduler
and the CLI query, filled by the writer from the checkpoint:
status, workflow, wait reason and key, due time, parent, last update. As on files, the
checkpoint is a cache of the state at a ledger position: the ledger is the log, and a run
whose checkpoint is behind is rebuilt from it (core/recovery.py).

Locking: ``lock(run_id)`` takes a PostgreSQL session-level advisory lock on a connection of
its own and holds it for the block; the server releases it when that connection ends, so a
writer killed with -9 frees its runs at once. A lock that is lost while held (the connection
dropped) cannot corrupt the run: every ledger append is conditional on the head the writer
read (:meth:`PostgresLedgerStore.append_lines`), so the loser's append is refused, and every
checkpoint write is conditional on the ledger position the row already reflects
(``ledger_seq``): a row never moves backwards, so the loser cannot put an older state back
after the new writer's (:class:`LedgerConflictError`, nothing written).
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from typing import Any, Callable, Iterator, Optional

from ...core.canonical import canonical_json
from ...core.clock import parse_iso
from ...core.errors import (
    CorruptRecordError,
    LedgerConflictError,
    RunLockedError,
    RunNotFoundError,
    UnsupportedFormatError,
)
from ...core.markers import stored_run
from ...core.models import RunState, RunStatus, WaitReason
from ...core.ports import CHECKPOINT_FORMAT, Capability, LedgerHead, RunStore, StoredCheckpoint
from ...core.ids import validate_id
from ..query import (
    is_due,
    is_waiting_on,
    matches,
    newest_key,
    oldest_key,
    reason_value,
    status_value,
    timestamp,
    until_key,
)
from .db import PgDatabase, parse_document


def _instant(value: Optional[str]) -> Optional[datetime]:
    """ISO text → aware datetime for an indexed column (``None`` when absent or unparsable)."""
    if not value:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


def row_columns(checkpoint: StoredCheckpoint) -> list[Any]:
    """The indexed columns of a checkpoint's row, in table order: run_id, status, workflow_id,
    wait_reason, wait_key, until_ts, updated_ts, parent_run_id, ledger_seq."""
    run = checkpoint.shown_run()
    waiting = run.waiting
    return [run.run_id, RunStatus(run.status).value, run.workflow_id,
            WaitReason(waiting.reason).value if waiting else None, waiting.wait_key if waiting else None,
            _instant(waiting.until) if waiting else None, _instant(run.updated_at), run.parent_run_id,
            checkpoint.ledger.seq]


ROW_COLUMNS = ("run_id", "status", "workflow_id", "wait_reason", "wait_key", "until_ts", "updated_ts",
               "parent_run_id", "ledger_seq")


class PostgresRunStore(RunStore):
    """Checkpoints as rows of ``runs``; queryable; advisory-lock per run."""

    capabilities = frozenset({Capability.CHECKPOINTS, Capability.LOCKS, Capability.CHECKPOINT_TOKENS,
                              Capability.QUERIES, Capability.WAITING_ON, Capability.WORK_CLAIMS, Capability.WAKE,
                              Capability.EDITS, Capability.LEDGER_MARKS})

    def __init__(self, db: PgDatabase | str) -> None:
        self.db = db if isinstance(db, PgDatabase) else PgDatabase(db)
        self._t = f"{self.db.s}.runs"
        # run id -> checkpoint_token of the row as this database's stores last wrote it (see written_token).
        self._written = self.db.written_tokens

    # -- writing ---------------------------------------------------------------------------

    def save(self, run: RunState) -> None:
        """Adopt ``run`` as edited outside the runtime (upstream 0.0.1's way of changing a run).

        The edit is recorded in the run's ledger first (an ``edit`` record carrying the whole
        state); a run with no ledger yet (a bare state saved for queries) gets a row only, which
        no runtime takes for proven.
        """
        from .ledger import PostgresLedgerStore

        ledger = PostgresLedgerStore(self.db)
        if ledger.head(run.run_id).seq:
            from ...core.runtime import Runtime

            Runtime(run_store=self, ledger_store=ledger).record_edit(run)
            return
        with self.db.connection() as conn, conn.transaction():
            row = conn.execute(f"SELECT checkpoint_json FROM {self._t} WHERE run_id = %s FOR UPDATE",
                               [run.run_id]).fetchone()
            try:
                old = self._parse(run.run_id, row[0]) if row else None
            except (CorruptRecordError, UnsupportedFormatError):
                old = None
            if old is not None and old.legacy is None:
                old.state["run"] = stored_run(run.to_dict())
                checkpoint = old
            else:
                checkpoint = StoredCheckpoint(state={"run": stored_run(run.to_dict()), "kernel": {
                    "effects": 0, "pending": None, "metadata": {}, "workflow": None, "origin": None}},
                    ledger=LedgerHead())
            # The row is locked and keeps its position, so this write is not fenced.
            self._upsert(conn, checkpoint, fenced=False)
        self._written.pop(run.run_id, None)  # an edit from outside the runtime: never taken as its own

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Insert or replace the run's row (one statement: atomic, committed at once).

        Fenced: a row that already reflects a later ledger position is left as it is and the
        write raises :class:`LedgerConflictError` (a writer that lost the run came back late).
        """
        with self.db.connection() as conn:
            token = self._upsert(conn, checkpoint)
        if len(self._written) >= 4096:  # a cache: forgetting only costs one query later
            self._written.clear()
        self._written[checkpoint.run_id] = token

    def parse_checkpoint(self, run_id: str, data: Any) -> StoredCheckpoint:
        """A checkpoint from the exact bytes of its row (strict: corrupt or newer is refused)."""
        return self._parse(run_id, data)

    def _upsert(self, conn: Any, checkpoint: StoredCheckpoint, *, fenced: bool = True) -> tuple[int, str]:
        run_id = checkpoint.run_id
        validate_id(run_id, "run id")
        data = canonical_json(checkpoint.to_dict())
        seq = checkpoint.ledger.seq
        # The fence: an existing row is replaced only by a checkpoint at its ledger position or later.
        fence = f"WHERE {self._t}.ledger_seq <= EXCLUDED.ledger_seq" if fenced else ""
        # The row stays marked as ahead while the ledger has records after this checkpoint (a
        # writer that lost the run may write a checkpoint behind the new writer's records).
        row = conn.execute(
            f"""INSERT INTO {self._t} (run_id, status, workflow_id, wait_reason, wait_key, until_ts, updated_ts,
                    parent_run_id, ledger_seq, checkpoint_json, ledger_ahead)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                        coalesce((SELECT coalesce(last_seq, seq) FROM {self.db.s}.ledger WHERE run_id = %s
                                  ORDER BY seq DESC LIMIT 1), 0) > %s)
                ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, workflow_id = EXCLUDED.workflow_id,
                    wait_reason = EXCLUDED.wait_reason, wait_key = EXCLUDED.wait_key, until_ts = EXCLUDED.until_ts,
                    updated_ts = EXCLUDED.updated_ts, parent_run_id = EXCLUDED.parent_run_id,
                    ledger_seq = EXCLUDED.ledger_seq, checkpoint_json = EXCLUDED.checkpoint_json, ledger_ahead = EXCLUDED.ledger_ahead,
                    version = {self._t}.version + 1
                {fence}
                RETURNING version, xmin::text""",
            [*row_columns(checkpoint), data, run_id, seq]).fetchone()
        if row is None:
            found = conn.execute(f"SELECT ledger_seq FROM {self._t} WHERE run_id = %s", [run_id]).fetchone()
            at = int(found[0]) if found else "?"
            raise LedgerConflictError(
                f"run {run_id}: the stored checkpoint reflects the ledger up to seq {at}, this one only up to "
                f"seq {seq} (another writer advanced the run); nothing was written", run_id=run_id, seq=at)
        return int(row[0]), str(row[1])

    def written_token(self, run_id: str) -> Optional[tuple[int, str]]:
        """The :meth:`checkpoint_token` of the row as this store last wrote it (``None``: not
        written by this store lately). Equal to the current token until someone else saves it."""
        return self._written.get(run_id)

    def delete(self, run_id: str) -> bool:
        """Forget a run's checkpoint; ``True`` if it existed (its ledger is kept)."""
        self._written.pop(run_id, None)
        with self.db.connection() as conn:
            return bool(conn.execute(f"DELETE FROM {self._t} WHERE run_id = %s", [run_id]).rowcount > 0)

    # -- block marks (core/blocks.py): rows of ``blocks``, hints beside the ledger ----------------

    def put_block(self, run_id: str, mark: dict[str, Any]) -> None:
        """Note that the run is blocked (replaces its mark)."""
        validate_id(run_id, "run id")
        data = canonical_json({**mark, "run_id": run_id})
        with self.db.connection() as conn:
            conn.execute(f"""INSERT INTO {self.db.s}.blocks (run_id, mark) VALUES (%s, %s)
                             ON CONFLICT (run_id) DO UPDATE SET mark = EXCLUDED.mark""", [run_id, data])

    def get_block(self, run_id: str) -> Optional[dict[str, Any]]:
        """The run's block mark, or ``None``."""
        with self.db.connection() as conn:
            row = conn.execute(f"SELECT mark FROM {self.db.s}.blocks WHERE run_id = %s", [run_id]).fetchone()
        return _mark(run_id, row[0]) if row is not None else None

    def list_blocks(self) -> dict[str, dict[str, Any]]:
        """Every block mark, by run id."""
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT run_id, mark FROM {self.db.s}.blocks ORDER BY run_id").fetchall()
        found = {str(run_id): _mark(str(run_id), data) for run_id, data in rows}
        return {k: v for k, v in found.items() if v is not None}

    def drop_block(self, run_id: str) -> None:
        """Forget the run's block mark."""
        with self.db.connection() as conn:
            conn.execute(f"DELETE FROM {self.db.s}.blocks WHERE run_id = %s", [run_id])

    # -- reading ---------------------------------------------------------------------------

    def load(self, run_id: str) -> Optional[RunState]:
        """The stored run as readers see it (secrets redacted, stored values resolved), or ``None``."""
        checkpoint = self.load_checkpoint(run_id)
        if checkpoint is None:
            return None
        from ..views import resolved_view
        from .ledger import PostgresLedgerStore

        return resolved_view(checkpoint, PostgresLedgerStore(self.db))

    def load_checkpoint(self, run_id: str) -> Optional[StoredCheckpoint]:
        """The stored checkpoint, or ``None`` if the run has none."""
        with self.db.connection() as conn:
            row = conn.execute(f"SELECT checkpoint_json FROM {self._t} WHERE run_id = %s", [run_id]).fetchone()
        return None if row is None else self._parse(run_id, row[0])

    def _parse(self, run_id: str, data: Any) -> StoredCheckpoint:
        where = f"checkpoint of run {run_id} in {self.db.describe()}"
        doc = parse_document(data, where, kind="checkpoint", newest=CHECKPOINT_FORMAT)
        try:
            checkpoint = StoredCheckpoint.from_dict(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptRecordError(f"{where} is missing or has a bad field ({exc})") from None
        if checkpoint.run_id != run_id:
            raise CorruptRecordError(f"{where} describes run {checkpoint.run_id!r}")
        return checkpoint

    def checkpoint_token(self, run_id: str) -> Optional[tuple[int, str]]:
        """``(version, xmin)`` of the run's row: changes whenever anyone saves it (``None``: no row).

        The runtime keeps a run's state between ticks while this and the ledger's
        ``position_token`` are unchanged, instead of replaying the tail since the checkpoint.
        """
        with self.db.connection() as conn:
            row = conn.execute(f"SELECT version, xmin::text FROM {self._t} WHERE run_id = %s", [run_id]).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def exists(self, run_id: str) -> bool:
        """True when the run has a checkpoint or ledger records."""
        with self.db.connection() as conn:
            row = conn.execute(
                f"SELECT EXISTS (SELECT 1 FROM {self._t} WHERE run_id = %s)"
                f" OR EXISTS (SELECT 1 FROM {self.db.s}.ledger WHERE run_id = %s)", [run_id, run_id]).fetchone()
        return bool(row[0])

    def pruned(self, run_id: str) -> bool:
        """Whether ``run_id`` was pruned (a row of the ``tombstones`` table keeps it)."""
        with self.db.connection() as conn:
            row = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {self.db.s}.tombstones WHERE run_id = %s)",
                               [run_id]).fetchone()
        return bool(row[0])

    # -- locking ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, run_id: str, *, wait: float = 0.0, create: bool = False) -> Iterator[None]:
        """Exclusive access to one run across processes and machines.

        :class:`RunLockedError` when another session holds it (after waiting up to ``wait``
        seconds, without polling: PostgreSQL's ``lock_timeout``). ``create=True`` (used by
        ``start``) locks an id that has no run yet; otherwise an unknown run is
        :class:`RunNotFoundError`.
        """
        validate_id(run_id, "run id")
        if not create and wait > 0 and not self.exists(run_id):
            raise RunNotFoundError(run_id)
        db = self.db
        key = db.lock_key(run_id)
        conn = db.take_lock_connection()
        try:
            got, known = self._acquire(conn, key, wait, None if create or wait > 0 else run_id)
        except BaseException:
            conn.close()  # its session, and any lock it might hold, ends with it
            raise
        if got and not known:
            self._release(conn, key)
        elif not got:
            db.give_back(conn)
        if not known:
            raise RunNotFoundError(run_id)
        if not got:
            raise RunLockedError(run_id)
        owner = os.getpid()
        try:
            yield
        finally:
            # A child of fork() leaving the block must not release its parent's lock.
            if os.getpid() == owner:
                self._release(conn, key)

    def _acquire(self, conn: Any, key: int, wait: float, check: Optional[str]) -> tuple[bool, bool]:
        """``(locked, known)``: ``known`` is whether run ``check`` exists (asked in the same
        round trip as the lock; always true when ``check`` is ``None``)."""
        psycopg = self.db.psycopg
        try:
            if wait <= 0:
                if check is None:
                    return bool(conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]), True
                row = conn.execute(
                    f"SELECT pg_try_advisory_lock(%s), EXISTS (SELECT 1 FROM {self._t} WHERE run_id = %s)"
                    f" OR EXISTS (SELECT 1 FROM {self.db.s}.ledger WHERE run_id = %s)", [key, check, check]).fetchone()
                return bool(row[0]), bool(row[1])
            with conn.transaction():
                # The advisory lock is session-level: it outlives this transaction.
                conn.execute("SELECT set_config('lock_timeout', %s, true)", [f"{max(1, int(wait * 1000))}ms"])
                conn.execute("SELECT pg_advisory_lock(%s)", [key])
            return True, True
        except psycopg.errors.LockNotAvailable:
            return False, True
        except psycopg.Error as exc:
            raise self.db.storage_error(exc) from None

    def _release(self, conn: Any, key: int) -> None:
        try:
            released = conn.execute("SELECT pg_advisory_unlock(%s)", [key]).fetchone()[0]
        except self.db.psycopg.Error:
            released = False  # the connection is gone, and the server released the lock with it
        if released:
            self.db.give_back(conn)
        else:
            conn.close()

    # -- queries ---------------------------------------------------------------------------

    def _select(self, where: str, params: list[Any], order: str, limit: Optional[int],
                accept: Callable[[RunState], bool], sort_key: Callable[[RunState], Any], *,
                ledger: bool = False) -> list[RunState]:
        """Rows matching ``where`` in ``order``. ``ledger``: rows marked ahead of their checkpoints
        are read from their ledgers instead (an index scan), filtered with ``accept`` and merged."""
        filtered = f"NOT ledger_ahead AND ({where})" if ledger else where
        sql = f"SELECT run_id, checkpoint_json FROM {self._t} WHERE {filtered} ORDER BY {order}"
        if limit is not None:
            sql += " LIMIT %s"
            params = [*params, max(limit, 0)]
        with self.db.connection() as conn:
            rows = conn.execute(sql, params).fetchall()
            ahead = conn.execute(f"SELECT run_id, checkpoint_json FROM {self._t} WHERE ledger_ahead").fetchall() \
                if ledger else []
        found = [self._parse(row[0], row[1]).shown_run() for row in rows]
        if not ahead:
            return found
        for run_id, data in ahead:
            run = self._ledger_view(run_id, data)
            if accept(run):
                found.append(run)
        found.sort(key=sort_key)
        return found if limit is None else found[: max(limit, 0)]

    def _ledger_view(self, run_id: str, data: Any) -> RunState:
        """A marked run as its ledger says (its row's checkpoint when the ledger cannot tell)."""
        from ..views import ledger_view
        from .ledger import PostgresLedgerStore

        try:
            run = ledger_view(self, PostgresLedgerStore(self.db), run_id)
        except (CorruptRecordError, RunNotFoundError, UnsupportedFormatError):
            run = None
        return run if run is not None else self._parse(run_id, data).shown_run()

    def list_runs(
        self,
        *,
        status: Optional[RunStatus] = None,
        wait_reason: Optional[WaitReason] = None,
        workflow_id: Optional[str] = None,
        limit: int = 100,
        as_stored: bool = False,
    ) -> list[RunState]:
        """Runs matching all given filters, most recently updated first, each as its ledger says (a
        run whose writer stopped between its append and its checkpoint is read from its ledger).
        ``as_stored``: as their rows say (cheaper; a worker's listing)."""
        where, params = ["TRUE"], []
        for column, value in (("status", status_value(status)), ("wait_reason", reason_value(wait_reason)),
                              ("workflow_id", workflow_id)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        return self._select(" AND ".join(where), params, "updated_ts DESC NULLS LAST, run_id", limit,
                            lambda r: matches(r, status=status_value(status), wait_reason=reason_value(wait_reason),
                                              workflow_id=workflow_id), newest_key, ledger=not as_stored)

    def list_due_wait_until(self, *, now_iso: str, limit: int = 100) -> list[RunState]:
        """WAITING runs with reason UNTIL whose ``until`` <= ``now_iso``, earliest first."""
        now = _instant(now_iso)
        if now is None:
            raise ValueError(f"now_iso is not an ISO timestamp: {now_iso!r}")
        now_ts = timestamp(now_iso)
        return self._select("status = 'waiting' AND wait_reason = 'until' AND until_ts <= %s", [now],
                            "until_ts, run_id", limit, lambda r: now_ts is not None and is_due(r, now_ts), until_key)

    def list_waiting_on(self, wait_key: str, *, limit: int = 1000) -> list[RunState]:
        """WAITING runs whose wait is on ``wait_key``, least recently updated first (index ``runs_wait_key``)."""
        return self._select("wait_key = %s AND status = 'waiting'", [wait_key],
                            "updated_ts ASC NULLS FIRST, run_id", limit, lambda r: is_waiting_on(r, wait_key),
                            oldest_key)

    def list_children(self, *, parent_run_id: str, status: Optional[RunStatus] = None) -> list[RunState]:
        """Runs whose ``parent_run_id`` is the given run, most recently updated first."""
        where, params = ["parent_run_id = %s"], [parent_run_id]
        wanted = status_value(status)
        if wanted is not None:
            where.append("status = %s")
            params.append(wanted)
        return self._select(" AND ".join(where), params, "updated_ts DESC NULLS LAST, run_id", None,
                            lambda r: matches(r, parent_run_id=parent_run_id, status=wanted), newest_key)

    # -- runs whose ledger may be past their checkpoint (core/ahead.py) --------------------------

    def mark_ahead(self, run_id: str) -> None:
        """Nothing to do: the ledger's append statement marks the row itself (``ledger_ahead``), in
        the same transaction as the records; the checkpoint at the ledger's head clears it."""

    def list_ahead(self, *, limit: int = 100) -> list[str]:
        """Runs marked as maybe ahead of their checkpoints (index ``runs_ahead``), least recently updated first."""
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT run_id FROM {self._t} WHERE ledger_ahead ORDER BY updated_ts, run_id LIMIT %s",
                                [max(int(limit), 0)]).fetchall()
        return [str(row[0]) for row in rows]

    # -- a worker fleet ----------------------------------------------------------------------

    def work_claims(self, *, owner: str, lease_s: float) -> Any:
        """This store's work claims for one worker (leases, ``LISTEN`` wake-ups): see
        :class:`~abstractruntime.storage.postgres.claims.PostgresClaims`."""
        from .claims import PostgresClaims

        return PostgresClaims(self.db, owner=owner, lease_s=lease_s,
                              parse=lambda run_id, data: self.parse_checkpoint(run_id, data).shown_checkpoint())

    def wake(self, run_ids: list[str]) -> None:
        """Tell idle workers (``NOTIFY``) that ``run_ids`` are ready to advance."""
        from .claims import notify_wake

        notify_wake(self.db, run_ids)

    def close(self) -> None:
        """Close the store's connections."""
        self.db.close()


__all__ = ["ROW_COLUMNS", "PostgresRunStore", "row_columns"]


def _mark(run_id: str, data: Any) -> Optional[dict[str, Any]]:
    """A stored block mark (``None`` when it does not parse or names another run: a hint only)."""
    from ...core.json_codec import loads_strict

    try:
        doc = loads_strict(bytes(data))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) and doc.get("run_id") == run_id else None
