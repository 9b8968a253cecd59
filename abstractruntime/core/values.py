"""Stored values: large values written once per run, lists that grow written by their tail.

Readers use a :class:`ValueTable`: every ``{"$val": V}`` and ``{"$ext": ID, "$items": [...]}``
definition met in a run's records is filed under its id (``sha256(JCS(node))``), and
:meth:`ValueTable.resolve` turns a stored value back into the value the run had. Writers use a
:class:`ValueWriter` (docs/file-format.md, "Stored values"): a value at least
:data:`VALUE_THRESHOLD` bytes long is defined once and referred to afterwards, and a list that
extends one the writer stored is written as that list plus its new items.

Finding that a value was stored before must cost what changed, not the size of the state: the
writer keeps private copies of the values it stored lately and compares the run's value with
them by content (``==`` runs in C; a value holding booleans, 0 or 1 is confirmed by
:func:`strict_equal`, since Python says ``True == 1``). It never trusts object identity: a
handler may have changed the object in place since.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .canonical import sha256_hex
from .jcs import jcs
from .markers import EXT, ITEMS, LIT, REF, SECRET, VAL, marker_kind

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


def is_ambiguous(value: Any) -> bool:
    """True when ``value`` holds a boolean or a number equal to 0 or 1 (where ``==`` confuses types)."""
    stack = [value]
    while stack:
        item = stack.pop()
        cls = item.__class__
        if cls is str or item is None:
            continue
        if cls is dict:
            stack.extend(item.values())
        elif cls is list or cls is tuple:
            stack.extend(item)
        elif isinstance(item, bool) or (isinstance(item, (int, float)) and item in (0, 1)):
            return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def strict_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: like ``==`` but ``True`` is not ``1`` and ``False`` is not ``0``."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if isinstance(x, bool) or isinstance(y, bool):
            if x is not y:
                return False
        elif isinstance(x, dict):
            if not isinstance(y, dict) or x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif isinstance(x, (list, tuple)):
            if not isinstance(y, (list, tuple)) or type(x) is not type(y) or len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif x != y or isinstance(y, (dict, list, tuple)):
            return False
    return True


def same_value(private: Any, live: Any, ambiguous: bool) -> bool:
    """``live`` equals ``private`` (a copy the caller keeps), exactly as JSON data."""
    try:
        if not private == live:
            return False
    except RecursionError:
        return False
    return not ambiguous or strict_equal(private, live)


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
    ambiguous: bool


class ValueWriter:
    """Decides, value by value, what a record writes: the value inline, a definition, or a reference."""

    def __init__(self, table: ValueTable) -> None:
        self.table = table
        self._recent: OrderedDict[str, _Stored] = OrderedDict()

    def remember(self, vid: str, live: Any, *, private: Any = None, ambiguous: Optional[bool] = None) -> None:
        """Keep a private copy of ``live`` (stored as ``vid``) to recognise it, or a list it grows into."""
        if not isinstance(live, (dict, list, tuple)):
            return
        copy = private if private is not None else json_copy(live)
        self._recent[vid] = _Stored(vid, copy, is_ambiguous(copy) if ambiguous is None else ambiguous)
        self._recent.move_to_end(vid)
        while len(self._recent) > RECENT_VALUES:
            self._recent.popitem(last=False)

    def forget(self, vids: list[str]) -> None:
        """Stop matching values whose definitions were rolled back."""
        for vid in vids:
            self._recent.pop(vid, None)

    def match(self, live: Any) -> Optional[_Stored]:
        """A stored value equal to ``live``, if the writer remembers one."""
        if not isinstance(live, (dict, list, tuple)):
            return None
        for stored in reversed(self._recent.values()):
            if type(stored.copy) is type(live) and len(stored.copy) == len(live) \
                    and same_value(stored.copy, live, stored.ambiguous):
                return stored
        return None

    def prefix(self, live: Any) -> Optional[_Stored]:
        """The longest remembered list that ``live`` extends by appending."""
        if not isinstance(live, list):
            return None
        best: Optional[_Stored] = None
        for stored in reversed(self._recent.values()):
            size = len(stored.copy) if isinstance(stored.copy, list) else -1
            if 0 < size < len(live) and (best is None or size > len(best.copy)) \
                    and same_value(stored.copy, live[:size], stored.ambiguous):
                best = stored
        return best

    def store(self, live: Any, encode: Callable[[Any], tuple[Any, bytes]], seq: int) -> Any:
        """What a record writes for ``live``: a reference, a list extension, a definition, or ``live`` inline.

        ``encode(value)`` returns the value's stored form (redacted, escaped) and its JCS bytes.
        """
        same = self.match(live)
        if same is not None:
            self._recent.move_to_end(same.vid)
            return {REF: same.vid}
        base = self.prefix(live)
        if base is not None:
            tail = live[len(base.copy):]
            items = [self.store(item, encode, seq) for item in tail]
            node = {EXT: base.vid, ITEMS: items}
            vid = value_id(node)
            self.table.add_ext(vid, base.vid, items, seq)
            tail_copy = [json_copy(item) for item in tail]
            self.remember(vid, live, private=base.copy + tail_copy,
                          ambiguous=base.ambiguous or is_ambiguous(tail_copy))
            return node
        stored, encoded = encode(live)
        if len(encoded) < VALUE_THRESHOLD or (isinstance(stored, dict) and SECRET in stored):
            return stored
        vid = sha256_hex(encoded)
        if vid in self.table:
            self.remember(vid, live)
            return {REF: vid}
        self.table.add_val(vid, stored, seq)
        self.remember(vid, live)
        return {VAL: stored}


__all__ = ["RECENT_VALUES", "VALUE_THRESHOLD", "UndefinedValueError", "ValueTable", "ValueWriter", "is_ambiguous",
           "json_copy", "same_value", "strict_equal", "value_id"]
