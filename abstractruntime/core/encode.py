"""Writing a format-3 record: what it stores for each value, and which fields it can leave out.

:class:`RecordEncoder` holds what a writer needs across records — the run's redactor, its
:class:`~abstractruntime.core.secret_values.SecretKeeper`, its
:class:`~abstractruntime.core.values.ValueTable` and a
:class:`~abstractruntime.core.values.ValueWriter` — and turns one value into what the record
stores (:meth:`RecordEncoder.slot`): secrets replaced by markers committing to them, user
objects using marker keys escaped, a large value defined once and referred to afterwards.
Everything it adds is undone by :meth:`RecordEncoder.rollback` when the record cannot be written.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .errors import InvalidInputError
from .jcs import MAX_SAFE_INTEGER, jcs
from .redaction import NoRedaction, Redactor
from .secret_values import SecretKeeper, seal_value
from .values import ValueTable, ValueWriter, json_copy


class RecordEncoder:
    """Turns live values into what a run's next record stores (one encoder per open run)."""

    def __init__(self, run_id: str, redactor: Redactor, keeper: SecretKeeper, table: ValueTable, *,
                 store_values: bool, writer: Optional[ValueWriter] = None) -> None:
        self.run_id = run_id
        self.redactor = redactor
        self.keeper = keeper
        self.table = table
        # ``writer``: the one an earlier session of the run used (it remembers what was stored).
        if writer is None or writer.table is not table:
            writer = ValueWriter(table)
        self.writer: Optional[ValueWriter] = writer if store_values else None
        self._mark: Optional[tuple[int, int]] = None
        # The JCS bytes :meth:`slot` made of a value it returned to be stored inline in this
        # record (``id`` -> the value and its bytes): the record's line reuses them (:meth:`encoded`).
        self._bytes: dict[int, tuple[Any, bytes]] = {}
        # The built-in rules return new containers; another redactor may hand back the run's own
        # objects, which the record's stored values must not share (the run changes them in place).
        self._copy = not _returns_copies(redactor)
        # With the built-in rules a number or a constant off a secret key is stored as it is
        # (their walk returns it unchanged): :meth:`slot` then skips the walk and the encoding.
        self._plain_scalars = not self._copy or type(redactor) is NoRedaction

    def is_secret_path(self, path: Sequence[Any]) -> bool:
        """True when a key on ``path`` names a secret (the value there is redacted whole)."""
        judge = getattr(self.redactor, "is_secret_key", None)
        return judge is not None and any(judge(part) for part in path)

    def sealed(self, value: Any, path: Sequence[Any] = (), root: str = "") -> Any:
        """``value`` with secrets replaced by markers and marker keys escaped (never stored by reference).

        Raises :class:`InvalidInputError` naming ``root`` + ``path`` for a value JSON cannot hold.
        """
        try:
            stored = seal_value(value, path, self.redactor, self.keeper)
        except RecursionError:
            jcs(value, root=_name(root, path))  # a cycle: say where
            raise InvalidInputError("Value is nested too deeply to store") from None
        return json_copy(stored) if self._copy else stored

    def slot(self, value: Any, path: Sequence[Any], seq: int, root: str = "vars") -> Any:
        """What a record stores for ``value`` found at ``path``: see the module docstring."""
        secret = self.is_secret_path(path)
        if not secret and self._plain_scalars and (value is None or value.__class__ is bool or (
                value.__class__ is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)):
            return value  # what sealed() and jcs() would give and accept: the value itself
        if self.writer is None or secret or not isinstance(value, (dict, list, tuple, str)):
            stored = self.sealed(value, path, root)
            # Refused here, naming the value, not later naming the record.
            self._bytes[id(stored)] = (stored, jcs(stored, root=_name(root, path)))
            return stored
        last: list[Any] = [None, b""]

        def encode(live: Any) -> tuple[Any, bytes]:
            stored = self.sealed(live, path, root)
            last[0], last[1] = stored, jcs(stored, root=_name(root, path))
            return stored, last[1]

        try:
            out = self.writer.store(value, encode, seq)
        except RecursionError:
            jcs(value, root=_name(root, path))
            raise InvalidInputError("Value is nested too deeply to store") from None
        if out is last[0]:  # stored inline (not a reference, a definition or a list extension)
            self._bytes[id(out)] = (out, last[1])
        return out

    def encoded(self, stored: Any) -> Optional[bytes]:
        """The JCS bytes of ``stored`` when :meth:`slot` returned it for this record and made them
        (the values it returns are fresh and nothing changes them before the record is sealed)."""
        known = self._bytes.get(id(stored))
        return known[1] if known is not None and known[0] is stored else None

    def begin(self) -> None:
        """Start a record: what follows can be undone by :meth:`rollback`."""
        self._mark = (self.table.mark(), self.keeper.mark())
        self._bytes.clear()
        if self.writer is not None:
            self.writer.begin_record()

    def expect(self, ops: Sequence[Any]) -> None:
        """Tell the writer which values of this record extend a list the delta tracker held."""
        if self.writer is None:
            return
        for op in ops:
            if getattr(op, "extends", 0) and op.private is not None:
                self.writer.expect(op.value, op.base, op.private)

    def defined(self) -> list[str]:
        """The stored values defined since :meth:`begin`."""
        return self.table.ids_since(self._mark[0]) if self._mark is not None else []

    def rollback(self) -> None:
        """Forget the definitions and secrets added since :meth:`begin` (the record was not written)."""
        if self._mark is None:
            return
        table_mark, keeper_mark = self._mark
        forgotten = self.table.rollback(table_mark)
        if self.writer is not None:
            self.writer.forget(forgotten)
            self.writer.begin_record()
        self.keeper.rollback(keeper_mark)
        self._mark = None

    def error_text(self, text: Optional[str]) -> Optional[str]:
        """An error message with every secret the value patterns find replaced."""
        if not text:
            return text
        redact = getattr(self.redactor, "redact_text", None)
        return redact(text) if redact is not None else text


def _returns_copies(redactor: Redactor) -> bool:
    """True when ``redactor`` is the built-in one, whose walk builds every container anew."""
    cls = type(redactor)
    return isinstance(redactor, Redactor) and not isinstance(redactor, NoRedaction) and all(
        getattr(cls, name) is getattr(Redactor, name) for name in ("redact_at", "redact_collect", "_walk", "_walk_dict"))


def _name(root: str, path: Sequence[Any]) -> str:
    """``vars`` + ``["seen", "ids"]`` → ``vars.seen.ids`` (how errors name a value)."""
    return ".".join([root, *(str(p) for p in path)]) if root else ".".join(str(p) for p in path)


__all__ = ["RecordEncoder"]
