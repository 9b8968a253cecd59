"""``PostgresLedgerStore``: the hash-chained ledger (the write-ahead log) in the ``ledger`` table.

A row holds one record, or several consecutive records of one append (schema migration 11),
keyed by ``(run_id, seq)``, the seq of its first record; ``last_seq`` is its last record's
(NULL when it holds one). ``line`` keeps the records exactly as the runtime sealed them, joined
by newlines as in a ``ledger.jsonl``, so each hash re-verifies byte for byte anywhere (``lines``
exports them one by one) — the one copy (migration 11 dropped the ``jsonb`` copy and
``prev_hash``). The narrow columns beside the line, filled by the writer, serve the queries:
``record_hash``, the hash of the row's last record (the head a conditional append compares);
``status``, ``idempotency_key`` and ``effect_id``, its first record's (``find_completed``: a
record they must describe starts a row).

Appends are conditional on the head the writer read: :meth:`PostgresLedgerStore.append_lines`
checks the head and inserts every line of a batch in one transaction, committed once (the
equivalent of the file store's one fsync per batch). The same statement marks the run's
``runs`` row as ahead of its checkpoint (``ledger_ahead``; cleared by the checkpoint at the
head), so a writer killed between its append and its checkpoint leaves the run found. A head elsewhere, or a concurrent
writer's rows at the same positions (the primary key), is :class:`LedgerConflictError` and
nothing of the batch is written — nor the secret values its records redacted, which go in
with the batch, in its transaction (:meth:`PostgresLedgerStore.put_secrets`).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Collection, Iterator, List, Optional, Sequence

from ...core.canonical import canonical_json
from ...core.chain import seal_batch
from ...core.errors import CorruptRecordError, InvalidInputError, LedgerConflictError
from ...core.models import StepRecord
from ...core.ports import Capability, LedgerHead, LedgerStore, retained
from ...core.records import JCS_FORMATS, expand_records
from ..fsio import loads_strict
from ..ledger_parse import parse_ledger
from .db import PgDatabase

# A ledger row holds at most this many records, and takes no more once its lines pass ROW_BYTES.
ROW_RECORDS = 64
ROW_BYTES = 8192
# Larger than any seq: "no upper bound" in a query that takes one.
_NO_LIMIT = 1 << 62


def _effect_id(doc: dict[str, Any]) -> Optional[int]:
    """The effect position a format-3 effect record names (its column, for find_completed)."""
    effect_id = doc.get("effect_id")
    return effect_id if doc.get("format") in JCS_FORMATS and isinstance(effect_id, int) else None


def _described(doc: dict[str, Any]) -> bool:
    """Whether ``find_completed``'s columns must describe this record: it names an idempotency
    key (older formats; a format-3 intent with the workflow's own key), or it is the completed
    outcome of a format-3 effect. Such a record starts a row of its own."""
    return doc.get("idempotency_key") is not None or (_effect_id(doc) is not None and doc.get("status") == "completed")


def _split(first_seq: int, data: Any) -> list[tuple[int, bytes]]:
    """A row's records as ``(seq, line)``: its lines, numbered from its first seq."""
    return [(first_seq + index, line) for index, line in enumerate(bytes(data).split(b"\n"))]


# The rows of a conditional append, as ``v(seq, last_seq, line, record_hash, status,
# idempotency_key, effect_id)``: one row (a step's batch) as scalars, cheaper to send than
# arrays; several as arrays, one element per row.
_ONE_ROW = """(SELECT %(seq)s::bigint, %(last)s::bigint, %(line)s::bytea, %(hash)s::text, %(status)s::text,
                      %(key)s::text, %(effect)s::bigint)"""
_ROWS = """unnest(%(seq)s::bigint[], %(last)s::bigint[], %(line)s::bytea[], %(hash)s::text[], %(status)s::text[],
                  %(key)s::text[], %(effect)s::bigint[])"""


def _conditional_append(ledger: str, runs: str, rows: str) -> str:
    """The one statement of an append: insert ``rows`` into ``ledger`` if the run's head is
    still ``(eseq, ehash)``, and mark its row of ``runs`` ahead of its checkpoint.

    Its one row: how many rows went in (all or none), then, when this statement made the mark,
    the run row's version and its token (``xmin``) before and after the mark, so a writer that
    knows the row as it wrote it still knows it (the runtime keeps the run's state warm between
    ticks on it).
    """
    return f"""
        WITH last AS (
            -- The head: the primary key's last entry of the run (ordered by the column, not by
            -- an output name).
            SELECT coalesce(l.last_seq, l.seq) AS seq, l.record_hash AS hash FROM {ledger} l
            WHERE l.run_id = %(r)s ORDER BY l.seq DESC LIMIT 1),
        inserted AS (
            INSERT INTO {ledger} (run_id, seq, last_seq, line, record_hash, status, idempotency_key, effect_id)
            SELECT %(r)s, v.seq, v.last_seq, v.line, v.record_hash, v.status, v.idempotency_key, v.effect_id
            FROM {rows} AS v(seq, last_seq, line, record_hash, status, idempotency_key, effect_id)
            WHERE coalesce((SELECT seq FROM last), 0) = %(eseq)s
                  AND (SELECT hash FROM last) IS NOT DISTINCT FROM %(ehash)s
            RETURNING 1),
        -- The row as it was before the mark (one snapshot: the update is not seen here). Made
        -- conditional on the mark, this read of a cached page cost the server more than it saved.
        unmarked AS (
            SELECT xmin::text AS x FROM {runs} WHERE run_id = %(r)s AND NOT ledger_ahead),
        -- The run's row is marked in the same statement: its ledger is now past its checkpoint
        -- until the checkpoint at the head clears the mark (core/ahead.py). Its tokens come back
        -- only when the row marked is the one read above: a change another writer committed
        -- while this statement waited for the row is not taken for this writer's own.
        marked AS (
            UPDATE {runs} SET ledger_ahead = true
            WHERE run_id = %(r)s AND NOT ledger_ahead AND EXISTS (SELECT 1 FROM inserted)
                  AND xmin::text = (SELECT x FROM unmarked)
            RETURNING version, xmin::text AS x),
        -- That row changed meanwhile: the mark is made all the same, on the row as it is now
        -- (only then is the row read a second time).
        remarked AS (
            UPDATE {runs} SET ledger_ahead = true
            WHERE run_id = %(r)s AND NOT ledger_ahead AND EXISTS (SELECT 1 FROM inserted)
                  AND EXISTS (SELECT 1 FROM unmarked) AND NOT EXISTS (SELECT 1 FROM marked))
        SELECT (SELECT count(*) FROM inserted), (SELECT version FROM marked), (SELECT x FROM unmarked),
               (SELECT x FROM marked)"""


def _seq_of(entry: dict[str, Any]) -> int:
    """The seq of the record a kept secret value belongs to."""
    try:
        return int(entry.get("seq") or 0)
    except (TypeError, ValueError):
        return 0


class PostgresLedgerStore(LedgerStore):
    """Hash-chained ledgers in PostgreSQL with conditional group appends and tail reads."""

    chained = True
    capabilities = frozenset({Capability.CHAINED, Capability.SEALED_LINES, Capability.POSITION_TOKENS,
                              Capability.ANCHORS, Capability.SECRETS})

    def __init__(self, db: PgDatabase | str) -> None:
        self.db = db if isinstance(db, PgDatabase) else PgDatabase(db)
        self._t = f"{self.db.s}.ledger"
        self._append_one = _conditional_append(self._t, f"{self.db.s}.runs", _ONE_ROW)
        self._append_rows = _conditional_append(self._t, f"{self.db.s}.runs", _ROWS)
        # Per thread: run id -> secret entries waiting for the append of their records.
        self._staged = threading.local()

    def _where(self, run_id: str) -> str:
        return f"ledger of run {run_id} in {self.db.describe()}"

    # -- writing ---------------------------------------------------------------------------

    def append(self, record: StepRecord) -> None:
        """Seal and append one record."""
        self.append_batch([record])

    def append_batch(self, records: Sequence[StepRecord]) -> None:
        """Seal records after each run's current head and insert them in one transaction."""
        by_run: dict[str, list[StepRecord]] = {}
        for record in records:
            by_run.setdefault(record.run_id, []).append(record)
        with self.db.connection() as conn:
            with self._conflicts_refused(", ".join(by_run)), conn.transaction():
                for run_id, batch in by_run.items():
                    docs, lines = seal_batch(batch, head=self._head(conn, run_id, checked=True))
                    self._insert(conn, run_id, docs, lines)

    def append_lines(self, run_id: str, docs: Sequence[dict[str, Any]], lines: Sequence[bytes],
                     *, expect: LedgerHead) -> LedgerHead:
        """Insert sealed records in one transaction if the ledger still ends at ``expect``.

        Raises :class:`LedgerConflictError` (nothing written) when another writer moved the
        head, before this transaction or concurrently with it.
        """
        if len(docs) != len(lines):
            raise InvalidInputError("append_lines needs one sealed line per record")
        for index, doc in enumerate(docs):
            if doc.get("seq") != expect.seq + 1 + index or doc.get("run_id", run_id) != run_id:
                raise InvalidInputError(f"run {run_id}: record {index} of the batch does not continue the ledger "
                                        f"from seq {expect.seq} (seq {doc.get('seq')!r})")
        staged = self._take_staged(run_id)
        secrets: List[dict[str, Any]] = []
        if staged:
            batch = {(doc.get("seq"), doc.get("record_hash")) for doc in docs}
            # Format-2 values name their record; format-3 values (a key, committed values) go in
            # with the next batch of this thread, whose records commit to them.
            secrets = [e for e in staged if "record_hash" not in e or (_seq_of(e), e.get("record_hash")) in batch]
        with self.db.connection() as conn:
            if docs:
                params, rows = self._params(run_id, docs, lines, expect)
                together = conn.transaction() if secrets else contextlib.nullcontext()
                with self._conflicts_refused(run_id), together:
                    # One statement (one round trip, one commit): the rows go in only if the
                    # head is still the one this writer read; the primary key refuses a writer
                    # that read the same head at the same moment. The batch's secret values
                    # go in only with its rows.
                    found = self.db.cursor(conn).execute(self._append_one if rows == 1 else self._append_rows,
                                                         params).fetchone()
                    if secrets and found[0] == rows:
                        self._insert_secrets(conn, run_id, secrets, seq=docs[0]["seq"])
                if found[0] == rows:
                    if found[1] is not None:
                        self._follow_mark(run_id, found)
                    return LedgerHead(docs[-1]["seq"], docs[-1].get("record_hash"))
            head = self._head(conn, run_id)
        if head.seq != expect.seq or head.head_hash != expect.head_hash:
            raise LedgerConflictError(
                f"run {run_id}: the ledger is at seq {head.seq}, not {expect.seq} as this writer read it "
                "(another writer appended); nothing was written", run_id=run_id, seq=head.seq)
        if docs:  # cannot happen: the statement inserts every row or none
            raise LedgerConflictError(f"run {run_id}: the batch was not written", run_id=run_id)
        return head

    def _follow_mark(self, run_id: str, found: Sequence[Any]) -> None:
        """The append marked the run's row ahead: if the row was as this database's stores last
        wrote it, its new token is theirs too (any other change in between keeps it unknown)."""
        version, before, after = found[1], found[2], found[3]
        tokens = self.db.written_tokens
        if after is not None and tokens.get(run_id) == (int(version), before):
            tokens[run_id] = (int(version), str(after))

    @staticmethod
    def _params(run_id: str, docs: Sequence[dict[str, Any]], lines: Sequence[bytes],
                expect: LedgerHead) -> tuple[dict[str, Any], int]:
        """The batch as rows, and how many: the parameters of :data:`_ONE_ROW` (a step's batch, one
        row) or of :data:`_ROWS` (arrays, one element per row).

        Consecutive records share a row (their lines joined by newlines, as in a
        ``ledger.jsonl``), keyed by its first seq, with its last seq and the last record's hash
        (the head after it). A record that the lookup columns must describe — one naming an
        idempotency key, a completed effect outcome — starts a row, whose status, key and effect
        position are its first record's. One row per step instead of one per record: half the
        rows, half the primary-key entries, and the WAL that goes with them. A row is kept small
        (:data:`ROW_RECORDS` records, about :data:`ROW_BYTES` bytes) so that reading one record,
        as proving a checkpoint does, reads little: a long tick or a copied ledger is many rows."""
        starts = [0]
        size = len(lines[0]) + 1
        for index in range(1, len(docs)):
            if _described(docs[index]) or index - starts[-1] >= ROW_RECORDS or size >= ROW_BYTES:
                starts.append(index)
                size = 0
            size += len(lines[index]) + 1
        params: dict[str, Any] = {"r": run_id, "eseq": expect.seq, "ehash": expect.head_hash}
        if len(starts) == 1:
            first, last = docs[0], docs[-1]
            params.update(seq=first["seq"], last=None if len(docs) == 1 else last["seq"],
                          line=bytes(lines[0]) if len(lines) == 1 else b"\n".join(lines),
                          hash=last.get("record_hash"), status=first.get("status"),
                          key=first.get("idempotency_key"), effect=_effect_id(first))
            return params, 1
        ends = [*starts[1:], len(docs)]
        heads = [docs[i] for i in starts]
        params.update(seq=[doc["seq"] for doc in heads],
                      last=[None if end - start == 1 else docs[end - 1]["seq"] for start, end in zip(starts, ends)],
                      line=[b"\n".join(lines[start:end]) for start, end in zip(starts, ends)],
                      hash=[docs[end - 1].get("record_hash") for end in ends],
                      status=[doc.get("status") for doc in heads], key=[doc.get("idempotency_key") for doc in heads],
                      effect=[_effect_id(doc) for doc in heads])
        return params, len(starts)

    @contextlib.contextmanager
    def _conflicts_refused(self, run_id: str) -> Iterator[None]:
        """Turns a primary-key clash (a concurrent writer took the same seq) into a conflict."""
        try:
            yield
        except self.db.psycopg.errors.UniqueViolation:
            raise LedgerConflictError(f"run {run_id}: another writer appended at the same position; "
                                      "nothing was written", run_id=run_id) from None

    def _insert(self, conn: Any, run_id: str, docs: Sequence[dict[str, Any]], lines: Sequence[bytes]) -> None:
        rows = []
        for doc, line in zip(docs, lines):
            rows.append((run_id, doc["seq"], bytes(line), doc.get("record_hash"), doc.get("status"),
                         doc.get("idempotency_key")))
        with conn.cursor() as cur:
            cur.executemany(
                f"""INSERT INTO {self._t} (run_id, seq, line, record_hash, status, idempotency_key)
                    VALUES (%s, %s, %s, %s, %s, %s)""", rows)

    def _head(self, conn: Any, run_id: str, *, checked: bool = False) -> LedgerHead:
        """The head the last row's columns name (a position token, compared with what a writer
        knows); ``checked``: also read its last line, which must say the same (a head to chain onto)."""
        line = ", line" if checked else ""
        row = conn.execute(f"SELECT coalesce(last_seq, seq), record_hash{line} FROM {self._t} WHERE run_id = %s "
                           "ORDER BY seq DESC LIMIT 1", [run_id]).fetchone()
        if row is None:
            return LedgerHead()
        return self._checked_head(run_id, row[0], row[1], row[2]) if checked else LedgerHead(int(row[0]), row[1])

    def _checked_head(self, run_id: str, seq: Any, head_hash: Any, data: Any) -> LedgerHead:
        """The head the last row's columns name, when its last line says the same; else the row
        was edited behind the store's back: :class:`CorruptRecordError` (a writer chaining onto a
        column would write a record the ledger's lines do not continue into)."""
        raw = bytes(data)
        try:
            last = loads_strict(raw[raw.rfind(b"\n") + 1:])
        except ValueError:
            last = None
        if not isinstance(last, dict) or last.get("seq") != seq or last.get("record_hash") != head_hash:
            raise CorruptRecordError(f"the last ledger row's columns (seq {seq}, hash {str(head_hash)[:12]}) are "
                                     "not its last record's; the row was edited", path=self._where(run_id),
                                     line=int(seq))
        return LedgerHead(int(seq), head_hash)

    def row_problems(self, run_id: str) -> List[str]:
        """What is wrong with the run's rows as rows: a key, ``last_seq``, ``record_hash``,
        ``status``, ``idempotency_key`` or ``effect_id`` column that is not what its lines say,
        a line that is not a record, a record out of its place in the row, or one that
        ``find_completed`` must find in the middle of a row. The lines themselves are checked by
        ``verify`` (the chain); this is what the queries read beside them."""
        problems: List[str] = []
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT seq, last_seq, line, record_hash, status, idempotency_key, effect_id "
                                f"FROM {self._t} WHERE run_id = %s ORDER BY seq", [run_id]).fetchall()
        for first, last_seq, data, head_hash, status, key, effect in rows:
            docs: List[dict[str, Any]] = []
            for seq, line in _split(int(first), data):
                try:
                    doc = loads_strict(line)
                except ValueError:
                    doc = None
                if not isinstance(doc, dict) or doc.get("seq") != seq:
                    problems.append(f"row {first}: the line at seq {seq} is not the record of that seq")
                    break
                if docs and _described(doc):
                    problems.append(f"row {first}: record {seq} starts no row, but the lookup columns must describe it")
                docs.append(doc)
            else:
                head, tail = docs[0], docs[-1]
                wanted = {"last_seq": tail["seq"] if len(docs) > 1 else None, "record_hash": tail.get("record_hash"),
                          "status": head.get("status"), "idempotency_key": head.get("idempotency_key")}
                have = {"last_seq": last_seq, "record_hash": head_hash, "status": status, "idempotency_key": key}
                if effect is not None or _effect_id(head) is not None and head.get("format") in JCS_FORMATS:
                    # (Rows from before migration 11 leave effect_id empty.)
                    wanted["effect_id"], have["effect_id"] = _effect_id(head), effect
                problems.extend(f"row {first}: {name} is {have[name]!r}, its lines say {want!r}"
                                for name, want in wanted.items() if have[name] != want)
        return problems

    # -- reading ---------------------------------------------------------------------------

    def list(self, run_id: str) -> List[dict[str, Any]]:
        """All records of the run, expanded as upstream 0.0.1 code reads them (hashes are not
        checked here: see ``verify``)."""
        return expand_records(self.stored(run_id), run_id)

    def stored(self, run_id: str) -> List[dict[str, Any]]:
        """All records of the run exactly as stored."""
        data = b"".join(line + b"\n" for line in self.lines(run_id))
        return parse_ledger(data, path=self._where(run_id), verify_chain=False).records

    def record_at(self, run_id: str, position: LedgerHead) -> Optional[dict[str, Any]]:
        """The stored record at ``position``'s seq, or ``None``."""
        found = self.records_at(run_id, [(position.seq, None)])
        return found[0] if found else None

    def records_at(self, run_id: str, positions: Sequence[tuple[int, Optional[int]]]) -> List[dict[str, Any]]:
        """The stored records at the given seqs (offsets mean nothing here)."""
        seqs = sorted({int(seq) for seq, _ in positions})
        if not seqs:
            return []
        with self.db.connection() as conn:
            # The row holding each seq: the one with the highest first seq not after it.
            rows = conn.execute(
                f"""SELECT DISTINCT l.seq, l.line FROM unnest(%s::bigint[]) AS w(seq)
                    CROSS JOIN LATERAL (SELECT seq, line FROM {self._t} WHERE run_id = %s AND seq <= w.seq
                                        ORDER BY seq DESC LIMIT 1) l ORDER BY l.seq""", [seqs, run_id]).fetchall()
        wanted = set(seqs)
        found = [loads_strict(line) for first, data in rows for seq, line in _split(int(first), data) if seq in wanted]
        # A record is the one whose own seq is asked for (a row edited out of shape holds others).
        return [doc for doc in found if isinstance(doc, dict) and doc.get("seq") in wanted]

    def lines(self, run_id: str) -> List[bytes]:
        """The run's records exactly as sealed, oldest first (a ``ledger.jsonl`` without newlines)."""
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT seq, line FROM {self._t} WHERE run_id = %s ORDER BY seq", [run_id]).fetchall()
        return [line for first, data in rows for _, line in _split(int(first), data)]

    def read_after(self, run_id: str, position: LedgerHead, *,
                   until_seq: Optional[int] = None) -> tuple[LedgerHead, List[dict[str, Any]]]:
        """The chain-checked records after ``position`` (up to ``until_seq``) and the ledger's head.

        One statement, so the head and the records come from one snapshot. The first record
        must continue the chain from ``position``: anything else is a
        :class:`~abstractruntime.core.errors.CorruptRecordError` naming the seq.
        """
        upper = _NO_LIMIT if until_seq is None else until_seq
        with self.db.connection() as conn:
            # The rows from the one holding the record after ``position`` up to ``until_seq``, and
            # the last row (the head).
            rows = conn.execute(
                f"""SELECT seq, coalesce(last_seq, seq), record_hash, line FROM {self._t}
                    WHERE run_id = %(r)s AND ((seq <= %(u)s AND seq >= coalesce(
                              (SELECT seq FROM {self._t} WHERE run_id = %(r)s AND seq <= %(p)s + 1
                               ORDER BY seq DESC LIMIT 1), 0))
                          OR seq = (SELECT max(seq) FROM {self._t} WHERE run_id = %(r)s))
                    ORDER BY seq""", {"r": run_id, "p": position.seq, "u": upper}).fetchall()
        if not rows:
            return LedgerHead(), []
        head = self._checked_head(run_id, rows[-1][1], rows[-1][2], rows[-1][3])
        data = b"".join(line + b"\n" for first, _, _, row in rows if first <= upper
                        for seq, line in _split(int(first), row) if position.seq < seq <= upper)
        start = LedgerHead(position.seq, position.head_hash) if position.seq else LedgerHead()
        parsed = parse_ledger(data, path=self._where(run_id), start_line=position.seq, head=start, run_id=run_id)
        return head, parsed.records

    def head(self, run_id: str) -> LedgerHead:
        """The last record's seq and hash (empty head when the run has no records)."""
        with self.db.connection() as conn:
            return self._head(conn, run_id)

    def position_token(self, run_id: str) -> tuple[int, Optional[str]]:
        """The head's ``(seq, record_hash)``: changes with every append, by any writer anywhere."""
        return self.position_token_at(run_id, self.head(run_id))

    @staticmethod
    def position_token_at(run_id: str, head: LedgerHead) -> tuple[int, Optional[str]]:
        """The :meth:`position_token` the ledger has while ``head`` is its head (no query)."""
        return head.seq, head.head_hash

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[dict[str, Any]]:
        """The first COMPLETED record with this idempotency key: a record that names the key itself
        (older formats; index ``ledger_completed``), or the outcome of the effect whose intent named
        it (index ``ledger_intent_keys``, then the primary key from the intent on, up to the outcome)."""
        t = self._t
        with self.db.connection() as conn:
            row = conn.execute(
                f"""SELECT line FROM {t} WHERE run_id = %(r)s AND seq = least(
                        (SELECT min(seq) FROM {t} WHERE run_id = %(r)s AND idempotency_key = %(k)s
                                AND status = 'completed'),
                        (SELECT min(c.seq) FROM {t} i CROSS JOIN LATERAL (
                            SELECT seq FROM {t} WHERE run_id = i.run_id AND seq > i.seq AND effect_id = i.effect_id
                                   AND status = 'completed' ORDER BY seq LIMIT 1) c
                         WHERE i.run_id = %(r)s AND i.idempotency_key = %(k)s AND i.status = 'started'
                               AND i.effect_id IS NOT NULL))""",
                {"r": run_id, "k": idempotency_key}).fetchone()
        # The row starts with the record looked up (a described record starts its row).
        return None if row is None else loads_strict(bytes(row[0]).split(b"\n", 1)[0])

    # -- values kept beside the run ----------------------------------------------------------

    def put_anchor(self, run_id: str, anchor: dict[str, Any]) -> None:
        """Keep a redacted state at a ledger position (a cache: replaced if present)."""
        with self.db.connection() as conn:
            conn.execute(f"""INSERT INTO {self.db.s}.anchors (run_id, seq, anchor) VALUES (%s, %s, %s)
                             ON CONFLICT (run_id, seq) DO UPDATE SET anchor = EXCLUDED.anchor""",
                         [run_id, int(anchor["seq"]), canonical_json(anchor)])

    def find_anchor(self, run_id: str, seq: int) -> Optional[dict[str, Any]]:
        """The kept anchor with the highest ``seq`` not after ``seq`` (an unreadable one is skipped)."""
        with self.db.connection() as conn:
            row = conn.execute(f"""SELECT anchor FROM {self.db.s}.anchors WHERE run_id = %s AND seq <= %s
                                   ORDER BY seq DESC LIMIT 1""", [run_id, seq]).fetchone()
        if row is None:
            return None
        try:
            doc = loads_strict(bytes(row[0]))
        except (ValueError, UnicodeDecodeError):
            return None  # anchors are a cache: the state is rebuilt from the ledger instead
        return doc if isinstance(doc, dict) else None

    def put_secrets(self, run_id: str, entries: Sequence[dict[str, Any]]) -> None:
        """Keep the real values of redacted fields, committed with the records that need them.

        Values of records already in the ledger go in at once. The others wait for the
        :meth:`append_lines` of this thread that writes their records and go in with them, in
        the same transaction: a batch refused (another writer moved the head) keeps none, so
        no value is left that matches no record. A snapshot's pin and its removal, which
        belong to no record, go in at once.
        """
        if not entries:
            return
        wanted = [dict(e) for e in entries]
        if all("pin" in e or "unpin" in e for e in wanted):
            with self.db.connection() as conn, conn.transaction():
                self._insert_secrets(conn, run_id, wanted)
            return
        if all("record_hash" not in e for e in wanted):  # format 3: with the next batch of this thread
            staged: dict[str, list[dict[str, Any]]] = self._staged.__dict__.setdefault("runs", {})
            staged.setdefault(run_id, []).extend(wanted)
            return
        present = {(doc.get("seq"), doc.get("record_hash"))
                   for doc in self.records_at(run_id, [(_seq_of(e), None) for e in wanted])}
        now = [e for e in wanted if (_seq_of(e), e.get("record_hash")) in present]
        if now:
            with self.db.connection() as conn, conn.transaction():
                self._insert_secrets(conn, run_id, now)
        later = [e for e in wanted if (_seq_of(e), e.get("record_hash")) not in present]
        if later:
            waiting: dict[str, list[dict[str, Any]]] = self._staged.__dict__.setdefault("runs", {})
            waiting.setdefault(run_id, []).extend(later)

    def _take_staged(self, run_id: str) -> List[dict[str, Any]]:
        staged: dict[str, list[dict[str, Any]]] = self._staged.__dict__.get("runs", {})
        return staged.pop(run_id, [])

    def _insert_secrets(self, conn: Any, run_id: str, entries: Sequence[dict[str, Any]], *, seq: int = 0) -> None:
        rows = [(run_id, _seq_of(e) or seq, canonical_json(dict(e))) for e in entries]
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {self.db.s}.secrets (run_id, seq, entry) VALUES (%s, %s, %s)", rows)

    def get_secrets(self, run_id: str) -> List[dict[str, Any]]:
        """The kept values, oldest first."""
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT entry FROM {self.db.s}.secrets WHERE run_id = %s ORDER BY id",
                                [run_id]).fetchall()
        return [doc for doc in (loads_strict(bytes(row[0])) for row in rows) if isinstance(doc, dict)]

    def runs_keeping_secrets(self) -> List[str]:
        """The runs that have rows in ``secrets``."""
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT DISTINCT run_id FROM {self.db.s}.secrets ORDER BY run_id").fetchall()
        return [str(row[0]) for row in rows]

    def retain_secrets(self, run_id: str, commitments: Collection[str]) -> None:
        """Keep only the values ``commitments`` (and snapshot pins) still need, in one transaction."""
        keep = retained(self.get_secrets(run_id), commitments)
        with self.db.connection() as conn, conn.transaction():
            conn.execute(f"DELETE FROM {self.db.s}.secrets WHERE run_id = %s", [run_id])
            if keep:
                self._insert_secrets(conn, run_id, keep)

    def close(self) -> None:
        """Close the store's connections."""
        self.db.close()


__all__ = ["PostgresLedgerStore"]
