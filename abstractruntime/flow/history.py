"""A code-first run's history: what each position of the run recorded, read from its ledger.

A code-first run is identified by position: every call of ``ctx`` that is recorded (a step,
a wait, an LLM call, ``ctx.now()``, ``ctx.patched()``) takes the run's next position, which is
the ``effect_id`` its records carry (the kernel numbers effects the same way). On resume the
function runs again from the top and each call returns what its position recorded.

:class:`History` turns the ledger's format-3 records into one :class:`Entry` per position:

- ``step`` records (``ext.step`` = ``{"name", "kind"}``): a step's intent (``started``), its
  value (``completed``, the ``result``) or a failed attempt (``failed``; the last one
  ``ext.step.final``); ``ctx.now()``/``uuid()``/``random()`` are ``step`` records of kind
  ``now``/``uuid``/``random``;
- ``patch`` records (``ext.patch`` = ``{"name", "applied"}``);
- ``effect`` records of the kernel's effects, and the ``resume`` record that answered a wait
  (its ``wait_id`` ``w<N>`` names position N);
- a ``restore`` takes the history back to the snapshot's position; a fork starts from its
  source run's history at the fork's position.

Reading is one pass over the records, linear in their number; stored values are resolved
only when a position is replayed. :mod:`.load` reads a run's history from its ledger and
keeps the durable part per runtime, so a warm process reads only the records appended since.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Optional

from ..core.ports import LedgerHead
from ..core.records import JCS_FORMATS
from ..core.secret_values import shown_text
from ..core.values import UndefinedValueError, ValueTable
from ..core.wal import navigate, record_parts

STEP, PATCH, UPGRADE = "step", "patch", "upgrade"
VALUE_KINDS = ("now", "uuid", "random")

# States of a position.
STARTED = "started"      # begun (a step's intent, an effect's intent), no outcome yet
DONE = "done"            # has its value (a result, or the answer to its wait)
RETRY = "retry"          # a failed attempt, more may come
FAILED = "failed"        # failed for good (a step: raised again on replay; an effect: failed the run)
WAITING = "waiting"      # the run waits on it, not answered yet

# The ctx method behind each effect type (how a position is named in messages and compared).
EFFECT_LABELS = {"ask_user": "ask", "wait_until": "sleep", "wait_event": "wait_event", "wait_job": "wait_job",
                 "llm_call": "llm", "tool_calls": "tools", "start_subworkflow": "child"}


def describe(kind: str, name: str) -> str:
    """How a position reads in messages: ``step 'charge'``, ``ctx.ask()``, ``ctx.child('billing')``."""
    if kind == STEP:
        return f"step {name!r}"
    if kind == PATCH:
        return f"ctx.patched({name!r})"
    if kind in VALUE_KINDS:
        return f"ctx.{kind}()"
    label = EFFECT_LABELS.get(kind, kind)
    if label == "child" and ":" in name:
        return f"ctx.child({name.split(':', 1)[1]!r})"
    return f"ctx.{label}()"


def effect_name(effect_type: str, workflow_id: Any = None) -> str:
    """The name compared at an effect's position: its ctx method (a child also names its workflow)."""
    label = EFFECT_LABELS.get(effect_type, effect_type)
    return f"{label}:{workflow_id}" if label == "child" and workflow_id is not None else label


@dataclass
class Entry:
    """What one position of the run recorded."""

    position: int
    kind: str
    name: str
    state: str
    value: Any = None          # stored form: resolve with History.value()
    effect_id: int = 0         # the id its records carry (its position, unless a restore renumbered)
    answered: bool = False     # value is the answer to a wait (a resume's payload)
    attempts: int = 0          # attempts begun
    failures: int = 0          # failed attempts recorded
    error: Optional[str] = None
    exception_type: Optional[str] = None
    # Whether ``value`` holds no marker (computed on first replay; None: not known yet).
    plain: Optional[bool] = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """See :func:`describe`."""
        return describe(self.kind, self.name)


@dataclass
class History:
    """The positions of one run, as its records so far say (see the module docstring)."""

    run_id: str
    entries: dict[int, Entry] = field(default_factory=dict)
    # effect id -> position: equal, unless a restore took the run back (effect ids never repeat,
    # so the calls made after a restore carry new ids at the positions the restore freed).
    positions: dict[int, int] = field(default_factory=dict)
    table: ValueTable = field(default_factory=ValueTable)
    # Every format-3 record absorbed (durable ones only), to take the history back on a restore.
    docs: list[dict[str, Any]] = field(default_factory=list)
    head: LedgerHead = field(default_factory=LedgerHead)
    # Reads another run's history (a fork's source); set by the loaders.
    source_reader: Optional[Callable[[str, int, Optional[str]], "History"]] = field(default=None, repr=False)
    # ``collected``: the table holds the definitions of every record absorbed (shared with overlays).
    _flags: dict[str, bool] = field(default_factory=lambda: {"collected": False}, repr=False)

    @property
    def last(self) -> int:
        """The highest position recorded (0 when none)."""
        return len(self.positions)

    def _at(self, effect_id: int) -> int:
        """The position of ``effect_id``: its own, or the next one for an id seen first."""
        position = self.positions.get(effect_id)
        if position is None:
            position = self.positions[effect_id] = len(self.positions) + 1
        return position

    def get(self, position: int) -> Optional[Entry]:
        """The entry at ``position`` (``None`` when nothing is recorded there)."""
        return self.entries.get(position)

    def overlay(self) -> "History":
        """A copy for one tick: absorbing records not yet durable changes the copy only."""
        return replace(self, entries=dict(self.entries), positions=dict(self.positions), docs=self.docs)

    # -- reading records ----------------------------------------------------------------

    def extend(self, docs: Iterable[dict[str, Any]], *, keep: bool = True) -> None:
        """Absorb records in ledger order; ``keep`` files them for a later restore (durable ones)."""
        for doc in docs:
            if doc.get("format") not in JCS_FORMATS:
                continue  # older formats predate code-first runs
            if keep:
                self.docs.append(doc)
            if self._flags["collected"]:  # the table holds every definition so far: keep it so
                self._collect(doc)
            self.absorb(doc)

    def _collect(self, doc: dict[str, Any]) -> None:
        for part in record_parts(doc):
            self.table.collect(part, int(doc.get("seq") or 0))

    def collect_all(self) -> None:
        """File the definitions of every record absorbed (done once, when a value first refers back)."""
        if not self._flags["collected"]:
            self._flags["collected"] = True
            for doc in self.docs:
                self._collect(doc)

    def absorb(self, doc: dict[str, Any]) -> None:
        """Apply one stored record to the entries."""
        kind = doc.get("kind")
        found = doc.get("effect_id")
        known = isinstance(found, int) and not isinstance(found, bool)
        effect_id: int = found if known else 0  # type: ignore[assignment]
        if kind == STEP and known:
            self._step(self._at(effect_id), effect_id, doc)
        elif kind == PATCH and known:
            meta = _ext(doc, PATCH)
            position = self._at(effect_id)
            self.entries[position] = Entry(position, PATCH, str(meta.get("name")), DONE,
                                           value=bool(meta.get("applied", True)), effect_id=effect_id)
        elif kind == "effect" and known:
            self._effect(effect_id, doc)
        elif kind == "resume":
            self._resume(doc)
        elif kind == "fail":
            result = self._plain(doc.get("result"))
            failed = result.get("effect_id") if isinstance(result, dict) else None
            at = self.positions.get(failed) if isinstance(failed, int) else None
            entry = self.entries.get(at) if at is not None else None
            if entry is not None:
                self.entries[entry.position] = replace(entry, state=FAILED, error=doc.get("error"))
        elif kind == "restore":
            self._restore(doc)
        elif kind == "start":
            self._start(doc)

    def _step(self, position: int, effect_id: int, doc: dict[str, Any]) -> None:
        meta = _ext(doc, STEP)
        prev = self.entries.get(position)
        name, skind = str(meta.get("name", "")), str(meta.get("kind", STEP))
        status = doc.get("status")
        failures = prev.failures if prev is not None else 0
        if status == "started":
            attempt = meta.get("attempt", 1)
            self.entries[position] = Entry(position, skind, name, STARTED, effect_id=effect_id,
                                           attempts=attempt if isinstance(attempt, int) else 1, failures=failures)
        elif status == "completed":
            self.entries[position] = Entry(position, skind, name, DONE, value=doc.get("result"), effect_id=effect_id,
                                           attempts=prev.attempts if prev is not None else 1, failures=failures)
        elif status == "failed":
            exc_type = meta.get("exception_type")
            self.entries[position] = Entry(position, skind, name, FAILED if meta.get("final") else RETRY,
                                           effect_id=effect_id, attempts=prev.attempts if prev is not None else 1,
                                           failures=failures + 1, error=doc.get("error"),
                                           exception_type=exc_type if isinstance(exc_type, str) else None)

    def _effect(self, effect_id: int, doc: dict[str, Any]) -> None:
        known = self.positions.get(effect_id)
        prev = self.entries.get(known) if known is not None else None
        status = doc.get("status")
        effect = doc.get("effect")
        if isinstance(effect, dict) and isinstance(effect.get("type"), str):
            etype = effect["type"]
            workflow_id = None
            if etype == "start_subworkflow":
                workflow_id = self._plain(_navigate(effect, ["payload", "workflow_id"], self.table))
            name = effect_name(etype, workflow_id)
        elif prev is not None:
            etype, name = prev.kind, prev.name
        else:
            return  # an outcome whose intent this history never saw (not a code-first position)
        position = self._at(effect_id)
        failures = prev.failures if prev is not None else 0
        attempts = prev.attempts if prev is not None else 0
        if status == "started":
            attempt = doc.get("attempt", 1)
            self.entries[position] = Entry(position, etype, name, STARTED, failures=failures, effect_id=effect_id,
                                           attempts=attempt if isinstance(attempt, int) else attempts + 1)
        elif status == "completed":
            self.entries[position] = Entry(position, etype, name, DONE, value=doc.get("result"), effect_id=effect_id,
                                           attempts=attempts, failures=failures)
        elif status == "waiting":
            self.entries[position] = Entry(position, etype, name, WAITING, attempts=attempts, failures=failures,
                                           effect_id=effect_id)
        elif status == "failed":
            self.entries[position] = Entry(position, etype, name, RETRY, attempts=attempts, failures=failures + 1,
                                           error=doc.get("error"), effect_id=effect_id)

    def _resume(self, doc: dict[str, Any]) -> None:
        stored = doc.get("result")
        result = self._plain(stored)
        if not isinstance(result, dict):
            return
        wait_id = result.get("wait_id")
        if not (isinstance(wait_id, str) and wait_id[:1] == "w" and wait_id[1:].isdigit()):
            return
        position = self.positions.get(int(wait_id[1:]))
        entry = self.entries.get(position) if position is not None else None
        if entry is None or result.get("reason") == "handler":
            return  # a handler arrived: the effect is performed again, nothing is answered
        payload = _navigate(stored, ["payload"], self.table) if "payload" in result else None
        self.entries[entry.position] = replace(entry, state=DONE, value=payload, answered=True, plain=None)

    def _restore(self, doc: dict[str, Any]) -> None:
        result = self._plain(doc.get("result"))
        ledger = result.get("snapshot_ledger") if isinstance(result, dict) else None
        seq = ledger.get("seq") if isinstance(ledger, dict) else None
        if not isinstance(seq, int):
            return
        # The run went back to its state at `seq`: so does its history (the records in between
        # stay in the ledger, as evidence, but are no longer the run's past).
        kept = [d for d in self.docs if isinstance(d.get("seq"), int) and d["seq"] <= seq]
        self.entries, self.positions = {}, {}
        for old in kept:
            self.absorb(old)

    def _start(self, doc: dict[str, Any]) -> None:
        result = self._plain(doc.get("result"))
        origin = result.get("forked_from") if isinstance(result, dict) else None
        if not isinstance(origin, dict) or self.source_reader is None:
            return
        found = origin.get("ledger")
        ledger: dict[str, Any] = found if isinstance(found, dict) else {}
        source, seq = origin.get("run_id"), ledger.get("seq")
        if not isinstance(source, str) or not isinstance(seq, int):
            return
        base = self.source_reader(source, seq, ledger.get("head_hash"))
        base.collect_all()
        self.entries, self.positions = dict(base.entries), dict(base.positions)
        self.table = base.table  # the values the source's records defined, and this run's from here on
        self._flags["collected"] = True
        self._collect(doc)  # the fork's own first record may define values its later records refer to

    # -- values ---------------------------------------------------------------------------

    def _plain(self, stored: Any) -> Any:
        """A record's field as readers see it (secrets shown, values resolved): for metadata only."""
        if stored is None or not isinstance(stored, (dict, list)):
            return stored
        return self.resolve(stored, shown_text)

    def resolve(self, stored: Any, fill: Callable[[dict[str, Any]], Any]) -> Any:
        """The value ``stored`` stands for (fresh containers); a reference to a value defined in an
        earlier record files every definition the history's records hold first (once)."""
        try:
            return self.table.resolve(stored, fill)
        except UndefinedValueError:
            if self._flags["collected"]:
                raise
            self.collect_all()
            return self.table.resolve(stored, fill)


def _ext(doc: dict[str, Any], name: str) -> dict[str, Any]:
    ext = doc.get("ext")
    member = ext.get(name) if isinstance(ext, dict) else None
    return member if isinstance(member, dict) else {}


def _navigate(stored: Any, path: list[str], table: ValueTable) -> Any:
    try:
        return navigate(stored, path, table)
    except (ValueError, UndefinedValueError):
        return None


__all__ = ["DONE", "EFFECT_LABELS", "Entry", "FAILED", "History", "PATCH", "RETRY", "STARTED", "STEP", "UPGRADE",
           "VALUE_KINDS", "WAITING", "describe", "effect_name"]
