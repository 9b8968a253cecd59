"""Stored values: large values written once per run, lists that grow written by their tail.

Readers use a :class:`ValueTable`: every ``{"$val": V}`` and ``{"$ext": ID, "$items": [...]}``
definition met in a run's records is filed under its id (``sha256(JCS(node))``), and
:meth:`ValueTable.resolve` turns a stored value back into the value the run had. Writers use a
:class:`ValueWriter` (docs/file-format.md, "Stored values"): a value at least
:data:`VALUE_THRESHOLD` bytes long is defined once and referred to afterwards, and a list that
extends one the writer stored is written as that list plus its new items.

Finding that a value was stored before must cost what changed, not the size of the state: the
writer keeps private copies of the values it stored lately (:func:`private_copy`) and compares
the run's value with them by content, with ``==``, which runs in C. Python says ``True == 1``
and ``False == 0.0``; JSON does not, so a private copy holds every boolean and every number
equal to 0 or 1 as an exact scalar (:class:`Exact`) whose ``==`` tells them apart: the
comparison stays one C-level ``==`` and is exact. The writer never trusts object identity: a
handler may have changed the object in place since.
"""

from __future__ import annotations

from collections import OrderedDict
from .fastclass import dataclass
from typing import Any, Callable, Optional

from .canonical import sha256_hex
from .jcs import jcs
from .markers import EXT, ITEMS, LIT, REF, SECRET, VAL, has_marker_key, marker_kind

# A value whose JCS form is at least this long is stored once and referred to by id.
VALUE_THRESHOLD = 256
# How many recently stored values the writer compares new values with.
RECENT_VALUES = 32


class UndefinedValueError(ValueError):
    """A record refers to a stored value the run never defined (or whose definition is not a list)."""


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, tuples and scalars), faster than ``copy.deepcopy``."""
    cls = value.__class__
    if cls is dict:
        return {k: json_copy(v) if v.__class__ in _NESTED else v for k, v in value.items()}
    if cls is list:
        return [json_copy(v) if v.__class__ in _NESTED else v for v in value]
    if cls is tuple:
        return tuple(json_copy(v) if v.__class__ in _NESTED else v for v in value)
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_copy(v) for v in value]
    return value


_NESTED = (dict, list, tuple)
# Exact classes a copy keeps as they are (a subclass, a str Enum say, takes the general path).
_ATOMS = (str, int, float, bool, type(None))


class Exact:
    """A boolean, 0 or 1 inside a private copy, equal only to what JSON holds equal to it.

    ``True == 1`` and ``False == 0.0`` in Python; in JSON a boolean is never a number. A private
    copy holds these scalars as the four instances of this class, so comparing it with a live
    value stays one ``==`` (in C, calling back here only at these scalars) and is exact: ``1``
    equals ``1.0`` (one JSON number) but not ``True``.
    """

    __slots__ = ("value",)
    __hash__ = None  # type: ignore[assignment]  # only ever a value inside a container

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        if other.__class__ is Exact:
            return other is self
        value = self.value
        if value is True or value is False:
            return other is value
        return isinstance(other, (int, float)) and not isinstance(other, bool) and other == value

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __repr__(self) -> str:
        return f"Exact({self.value!r})"


_TRUE, _FALSE, _ZERO, _ONE = Exact(True), Exact(False), Exact(0), Exact(1)
_SHARED = (str, type(None))


def private_copy(value: Any) -> Any:
    """A copy of JSON data that nothing else holds, to compare later values with by ``==`` exactly.

    Containers are copied (strings and other immutable scalars are shared); booleans and numbers
    equal to 0 or 1 become :class:`Exact` scalars. Not for use as data: only for comparing.
    """
    cls = value.__class__
    if cls is dict:
        return {k: v if v.__class__ in _SHARED else private_copy(v) for k, v in value.items()}
    if cls is list:
        return [v if v.__class__ in _SHARED else private_copy(v) for v in value]
    if cls is str or value is None:
        return value
    if cls is int or cls is float:
        return _ZERO if value == 0 else _ONE if value == 1 else value
    if cls is bool:
        return _TRUE if value else _FALSE
    if cls is tuple:
        return tuple(private_copy(v) for v in value)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):  # an IntEnum: JSON holds its number
        return _ZERO if value == 0 else _ONE if value == 1 else value
    if isinstance(value, dict):
        return {k: private_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [private_copy(v) for v in value]
    return value  # not JSON data: kept as it is (the encoder refuses it where it is written)


def public_copy(private: Any) -> Any:
    """JSON data equal to ``private`` (a :func:`private_copy`), every container new: what the
    state it was copied from held, as JSON holds it (a number ``1.0`` may come back ``1``)."""
    cls = private.__class__
    if cls is dict:
        return {k: v if v.__class__ in _SHARED else public_copy(v) for k, v in private.items()}
    if cls is list:
        return [v if v.__class__ in _SHARED else public_copy(v) for v in private]
    if cls is Exact:
        return private.value
    if cls is tuple:
        return tuple(public_copy(v) for v in private)
    return private


def same_value(private: Any, live: Any) -> bool:
    """``live`` equals ``private`` (a :func:`private_copy` the caller keeps), exactly as JSON data."""
    try:
        return bool(private == live)
    except RecursionError:
        return False


def value_id(node: Any) -> str:
    """The id of a stored value: the hex SHA-256 of the JCS form of its definition's content."""
    return sha256_hex(jcs(node))


class ValueTable:
    """The stored values one run has defined, by id, and how to resolve a stored value."""

    def __init__(self) -> None:
        # id -> ("val", V) or ("ext", prefix id, items), all in stored form.
        self._nodes: dict[str, tuple[Any, ...]] = {}
        # id -> (seq, byte offset of its line or None): where it is defined.
        self.where: dict[str, tuple[int, Optional[int]]] = {}
        self._order: list[str] = []  # ids in the order they were filed (for rollback)

    def __contains__(self, value_id_: object) -> bool:
        return value_id_ in self._nodes

    def mark(self) -> int:
        """A point :meth:`rollback` can return to."""
        return len(self._order)

    def rollback(self, mark: int) -> list[str]:
        """Forget the definitions filed since ``mark`` (their record was never written); returns their ids."""
        gone = self._order[mark:]
        del self._order[mark:]
        for vid in gone:
            self._nodes.pop(vid, None)
            self.where.pop(vid, None)
        return gone

    def ids_since(self, mark: int) -> list[str]:
        """The ids filed since ``mark``."""
        return list(self._order[mark:])

    def locate(self, vid: str, seq: int, offset: Optional[int]) -> None:
        """Record where ``vid``'s definition landed (the byte offset of its line, once written)."""
        if vid in self._nodes:
            self.where[vid] = (seq, offset)

    def __len__(self) -> int:
        return len(self._nodes)

    def add_val(self, vid: str, stored: Any, seq: int, offset: Optional[int] = None) -> None:
        """File a ``$val`` definition whose id the writer computed."""
        if vid not in self._nodes:
            self._nodes[vid] = ("val", stored)
            self.where[vid] = (seq, offset)
            self._order.append(vid)

    def add_ext(self, vid: str, prefix: str, items: list[Any], seq: int, offset: Optional[int] = None) -> None:
        """File an ``$ext`` definition whose id the writer computed."""
        if vid not in self._nodes:
            self._nodes[vid] = ("ext", prefix, items)
            self.where[vid] = (seq, offset)
            self._order.append(vid)

    def collect(self, stored: Any, seq: int, offset: Optional[int] = None) -> list[str]:
        """File every definition inside ``stored`` (a record's part); returns their ids, inner first.

        Raises :class:`ValueError` for a malformed marker.
        """
        found: list[str] = []
        stack: list[tuple[Any, bool]] = [(stored, False)]
        while stack:
            item, done = stack.pop()
            if isinstance(item, list):
                stack.extend((child, False) for child in reversed(item) if isinstance(child, (dict, list)))
                continue
            if not isinstance(item, dict):
                continue
            kind = marker_kind(item)
            if done:
                if kind == "val":
                    vid = value_id(item[VAL])
                    self.add_val(vid, item[VAL], seq, offset)
                else:
                    vid = value_id({EXT: item[EXT], ITEMS: item[ITEMS]})
                    self.add_ext(vid, item[EXT], item[ITEMS], seq, offset)
                found.append(vid)
                continue
            if kind in ("val", "ext"):
                stack.append((item, True))  # after its contents: inner definitions come first
            if kind in ("ref", "secret"):
                continue
            if kind == "val":
                children = [item[VAL]]  # the value itself, which may be a marker (a $lit, say)
            else:
                inner = item[LIT] if kind == "lit" else item[ITEMS] if kind == "ext" else item
                children = inner if isinstance(inner, list) else list(inner.values())
            stack.extend((child, False) for child in reversed(children) if isinstance(child, (dict, list)))
        return found

    def ref_form(self, stored: Any) -> Any:
        """``stored`` with every definition replaced by a reference to itself (the form a state holds).

        Definitions must have been filed (:meth:`collect` or the writer's ``add_*``).
        """
        if isinstance(stored, list):
            items = [self.ref_form(item) if isinstance(item, (dict, list)) else item for item in stored]
            return items if any(a is not b for a, b in zip(items, stored)) else stored
        if not isinstance(stored, dict):
            return stored
        kind = marker_kind(stored)
        if kind == "val":
            return {REF: value_id(stored[VAL])}
        if kind == "ext":
            return {REF: value_id({EXT: stored[EXT], ITEMS: stored[ITEMS]})}
        if kind in ("ref", "secret"):
            return stored
        if kind == "lit":  # its keys are taken as they are; its values are values
            literal = stored[LIT]
            inner = {k: self.ref_form(v) if isinstance(v, (dict, list)) else v for k, v in literal.items()}
            return stored if all(inner[k] is literal[k] for k in literal) else {LIT: inner}
        out = {k: self.ref_form(v) if isinstance(v, (dict, list)) else v for k, v in stored.items()}
        return out if any(out[k] is not stored[k] for k in stored) else stored

    def ref_copy(self, stored: Any) -> Any:
        """``json_copy(self.ref_form(stored))`` in one walk: the state's form of ``stored``, sharing no
        container with it (what a replay puts in the state image).

        Plain objects and lists — what records hold — are copied as they are walked; a marker, a
        tuple or a subclass goes the two-pass way, so the result is always equal to it.
        """
        cls = stored.__class__
        if cls is dict:
            if has_marker_key(stored):
                return json_copy(self.ref_form(stored))
            return {k: v if v.__class__ in _ATOMS else self.ref_copy(v) for k, v in stored.items()}
        if cls is list:
            return [v if v.__class__ in _ATOMS else self.ref_copy(v) for v in stored]
        if cls in _ATOMS:
            return stored
        return json_copy(self.ref_form(stored))

    def node(self, vid: str) -> tuple[Any, ...]:
        """The definition filed under ``vid`` (:class:`UndefinedValueError` if none)."""
        node = self._nodes.get(vid)
        if node is None:
            raise UndefinedValueError(f"stored value {vid[:12]}… is referred to but never defined")
        return node

    def resolve(self, stored: Any, secret: Callable[[dict[str, Any]], Any],
                cache: Optional[dict[str, Any]] = None) -> Any:
        """The value ``stored`` stands for; ``secret(marker)`` gives what a redacted secret becomes
        (its real value, or its shown text).

        Without ``cache`` every container returned is fresh (the run may change it in place). With
        a ``cache`` (a dict the caller keeps), stored values are resolved once and *shared* between
        the results: a read-only view, e.g. a whole ledger expanded for display.
        """
        if isinstance(stored, list):
            return [self.resolve(item, secret, cache) if isinstance(item, (dict, list)) else item for item in stored]
        if not isinstance(stored, dict):
            return stored
        kind = marker_kind(stored)
        if kind is None:
            return {k: self.resolve(v, secret, cache) if isinstance(v, (dict, list)) else v for k, v in stored.items()}
        if kind == "secret":
            # A secret's value is kept as the record would have stored it (user objects using
            # marker keys escaped): resolve it like any stored value.
            real = secret(stored)
            return self.resolve(real, secret, cache) if isinstance(real, (dict, list)) else real
        if kind == "lit":
            return {k: self.resolve(v, secret, cache) for k, v in stored[LIT].items()}
        if kind == "val":
            return self.resolve(stored[VAL], secret, cache)
        if kind == "ext":
            return self._resolve_list(stored[EXT], stored[ITEMS], secret, cache)
        return self._resolve_id(stored[REF], secret, cache)

    def _resolve_id(self, vid: str, secret: Callable[[dict[str, Any]], Any], cache: Optional[dict[str, Any]]) -> Any:
        if cache is not None and vid in cache:
            return cache[vid]
        node = self.node(vid)
        if node[0] == "val":
            value = self.resolve(node[1], secret, cache)
        else:
            value = self._resolve_list(node[1], node[2], secret, cache)
        if cache is not None:
            cache[vid] = value
        return value

    def _resolve_list(self, prefix: str, items: list[Any], secret: Callable[[dict[str, Any]], Any],
                      cache: Optional[dict[str, Any]]) -> list[Any]:
        # An $ext chain may be thousands deep (one link per turn of an agent): walk it, no recursion.
        tails = [items]
        vid = prefix
        while True:
            if cache is not None and vid in cache:
                base = list(cache[vid])
                break
            node = self.node(vid)
            if node[0] == "ext":
                tails.append(node[2])
                vid = node[1]
                continue
            base = self.resolve(node[1], secret, cache)
            if not isinstance(base, list):
                raise UndefinedValueError(f"stored value {vid[:12]}… is extended as a list but is not one")
            if cache is not None:
                cache[vid] = list(base)
            break
        for tail in reversed(tails):
            base.extend(self.resolve(item, secret, cache) if isinstance(item, (dict, list)) else item for item in tail)
        return base

    def closure(self, stored: Any) -> set[str]:
        """The ids ``stored`` refers to, directly or through other stored values."""
        seen: set[str] = set()
        stack = [stored]
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(item)
                continue
            if not isinstance(item, dict):
                continue
            kind = marker_kind(item)
            if kind == "ref" and item[REF] not in seen:
                seen.add(item[REF])
                node = self._nodes.get(item[REF])
                if node is not None:
                    stack.append({REF: node[1]} if node[0] == "ext" else node[1])
                    if node[0] == "ext":
                        stack.append(node[2])
            elif kind == "secret":
                continue
            elif kind == "lit":  # its keys are taken as they are; its values are values
                stack.extend(item[LIT].values())
            elif kind == "val":
                stack.append(item[VAL])
            elif kind == "ext":
                stack.append({REF: item[EXT]})
                stack.append(item[ITEMS])
            else:
                stack.extend(item.values())
        return seen


@dataclass
class _Stored:
    """A value the writer stored lately: its id and a private copy of the run's value."""

    vid: str
    copy: Any


class ValueWriter:
    """Decides, value by value, what a record writes: the value inline, a definition, or a reference."""

    def __init__(self, table: ValueTable) -> None:
        self.table = table
        self._recent: OrderedDict[str, _Stored] = OrderedDict()
        # For the record being encoded only (no user code runs until it is sealed, so nothing
        # can change in between): lists known to extend a private copy, and values already stored.
        self._expected: dict[int, tuple[Any, Any, Any]] = {}
        self._done: dict[int, tuple[Any, str]] = {}

    def begin_record(self) -> None:
        """Forget what was known about the previous record's values."""
        self._expected.clear()
        self._done.clear()

    def expect(self, live: list[Any], base: Any, private: Any) -> None:
        """``live`` (a value of the record being encoded) is ``base`` — a private copy this writer
        may remember — plus new items, and ``private`` is its private copy (the delta tracker
        compared them already): storing it then costs no second comparison."""
        self._expected[id(live)] = (live, base, private)

    def remember(self, vid: str, live: Any, *, private: Any = None) -> None:
        """Keep a private copy of ``live`` (stored as ``vid``) to recognise it, or a list it grows into."""
        if not isinstance(live, (dict, list, tuple)):
            return
        copy = private if private is not None else private_copy(live)
        self._recent[vid] = _Stored(vid, copy)
        self._recent.move_to_end(vid)
        while len(self._recent) > RECENT_VALUES:
            self._recent.popitem(last=False)

    def seed(self, stored: dict[str, Any], live: dict[str, Any]) -> None:
        """Remember the values a run's state refers to (``stored``: its variables as the state
        document holds them; ``live``: the same variables resolved), so a run opened from its
        records goes on referring to them and extending them."""
        stack = [(stored, live)]
        while stack:
            doc, values = stack.pop()
            for name, item in doc.items():
                value = values.get(name) if isinstance(values, dict) else None
                if not isinstance(item, dict) or not isinstance(value, (dict, list)):
                    continue
                kind = marker_kind(item)
                if kind == "ref":
                    self.remember(item[REF], value)
                elif kind is None and isinstance(value, dict):
                    stack.append((item, value))

    def forget(self, vids: list[str]) -> None:
        """Stop matching values whose definitions were rolled back."""
        for vid in vids:
            self._recent.pop(vid, None)

    def match(self, live: Any) -> Optional[_Stored]:
        """A stored value equal to ``live``, if the writer remembers one."""
        if not isinstance(live, (dict, list, tuple)):
            return None
        size = len(live)
        for stored in reversed(self._recent.values()):
            if len(stored.copy) == size and same_value(stored.copy, live):
                return stored
        return None

    def prefix(self, live: Any) -> Optional[_Stored]:
        """The longest remembered list that ``live`` extends by appending.

        Longest first, so the usual case — the list stored last, plus new items — costs one
        comparison, whatever else is remembered.
        """
        if not isinstance(live, list):
            return None
        expected = self._expected.get(id(live))
        if expected is not None and expected[0] is live:
            for stored in self._recent.values():
                if stored.copy is expected[1]:
                    return stored
        size = len(live)
        shorter = [s for s in self._recent.values() if s.copy.__class__ is list and 0 < len(s.copy) < size]
        shorter.sort(key=lambda s: len(s.copy), reverse=True)
        for stored in shorter:
            copy, n = stored.copy, len(stored.copy)
            # Cheap refusals first: the last and first items.
            if same_value(copy[n - 1], live[n - 1]) and same_value(copy[0], live[0]) \
                    and same_value(copy, live[:n]):
                return stored
        return None

    def store(self, live: Any, encode: Callable[[Any], tuple[Any, bytes]], seq: int) -> Any:
        """What a record writes for ``live``: a reference, a list extension, a definition, or ``live`` inline.

        ``encode(value)`` returns the value's stored form (redacted, escaped) and its JCS bytes.
        """
        done = self._done.get(id(live))
        if done is not None and done[0] is live:
            return {REF: done[1]}  # the same object earlier in this record: unchanged since
        same = self.match(live)
        if same is not None:
            self._recent.move_to_end(same.vid)
            return self._stored(live, same.vid, {REF: same.vid})
        expected = self._expected.get(id(live))
        private = expected[2] if expected is not None and expected[0] is live else None
        base = self.prefix(live)
        if base is not None:
            tail = live[len(base.copy):]
            items = [self.store(item, encode, seq) for item in tail]
            node = {EXT: base.vid, ITEMS: items}
            vid = value_id(node)
            self.table.add_ext(vid, base.vid, items, seq)
            if private is None:
                private = base.copy + [private_copy(item) for item in tail]
            self.remember(vid, live, private=private)
            return self._stored(live, vid, node)
        stored, encoded = encode(live)
        if len(encoded) < VALUE_THRESHOLD or (isinstance(stored, dict) and SECRET in stored):
            return stored
        vid = sha256_hex(encoded)
        self.remember(vid, live, private=private)
        if vid in self.table:
            return self._stored(live, vid, {REF: vid})
        self.table.add_val(vid, stored, seq)
        return self._stored(live, vid, {VAL: stored})

    def _stored(self, live: Any, vid: str, node: Any) -> Any:
        if isinstance(live, (dict, list, tuple)):
            self._done[id(live)] = (live, vid)
        return node


__all__ = ["RECENT_VALUES", "VALUE_THRESHOLD", "Exact", "UndefinedValueError", "ValueTable", "ValueWriter", "json_copy",
           "private_copy", "same_value", "value_id"]
