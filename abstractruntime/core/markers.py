"""The marker objects inside format-3 values — pure functions (docs/file-format.md).

Inside an effect's payload, a result or a delta value, an object of one of these shapes is not
user data but stands for something:

- ``{"$v": ID}`` — a stored value, defined earlier (or in the same record);
- ``{"$val": V}`` — defines the stored value ``V`` (its id is ``sha256(JCS(V))``) and stands for it;
- ``{"$ext": ID, "$items": [...]}`` — defines a list: the stored list ``ID`` plus these items;
- ``{"$secret": COMMITMENT, "$shown": TEXT}`` — a redacted secret (TEXT is what readers show);
- ``{"$lit": OBJECT}`` — a user object that happens to use one of these keys, taken literally.

A user object with any of the marker keys is written wrapped in ``$lit`` (:func:`escape`); any
other object carrying a marker key is corruption (:func:`marker_kind` raises ``ValueError``).
"""

from __future__ import annotations

import re
from typing import Any, Optional

REF, VAL, EXT, ITEMS, SECRET, SHOWN, LIT = "$v", "$val", "$ext", "$items", "$secret", "$shown", "$lit"
MARKER_KEYS = frozenset({REF, VAL, EXT, ITEMS, SECRET, SHOWN, LIT})

# The shape of each marker: its exact set of keys.
_SHAPES = {
    frozenset({REF}): "ref",
    frozenset({VAL}): "val",
    frozenset({EXT, ITEMS}): "ext",
    frozenset({SECRET, SHOWN}): "secret",
    frozenset({LIT}): "lit",
}


def has_marker_key(obj: dict[str, Any]) -> bool:
    """True when ``obj`` uses any marker key (cheap: most objects have none)."""
    return any(key in MARKER_KEYS for key in obj) if len(obj) <= 2 else not MARKER_KEYS.isdisjoint(obj)


def marker_kind(obj: dict[str, Any]) -> Optional[str]:
    """``"ref"``, ``"val"``, ``"ext"``, ``"secret"`` or ``"lit"`` for a marker, ``None`` for user data.

    Raises :class:`ValueError` for an object that uses marker keys in no valid shape, or whose
    parts have the wrong types.
    """
    if not has_marker_key(obj):
        return None
    kind = _SHAPES.get(frozenset(obj))
    if kind is None:
        raise ValueError(f"an object uses the marker keys {sorted(k for k in obj if k in MARKER_KEYS)} "
                         "in no valid shape")
    if kind == "ref" and not _is_id(obj[REF]):
        raise ValueError("a $v reference is not a 64-digit hex id")
    if kind == "ext" and (not _is_id(obj[EXT]) or not isinstance(obj[ITEMS], list)):
        raise ValueError("an $ext definition needs a 64-digit hex id and a list of $items")
    if kind == "secret" and (not _is_id(obj[SECRET]) or not isinstance(obj[SHOWN], str)):
        raise ValueError("a $secret marker needs a 64-digit hex commitment and a $shown text")
    if kind == "lit" and not isinstance(obj[LIT], dict):
        raise ValueError("$lit wraps an object")
    return kind


_ID = re.compile(r"[0-9a-f]{64}")


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and _ID.fullmatch(value) is not None


def escape(value: Any) -> Any:
    """``value`` with every user object that uses a marker key wrapped in ``{"$lit": ...}``.

    Returns ``value`` itself when nothing needed wrapping (no copy on the common path).
    """
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, child in value.items():
            new = escape(child) if isinstance(child, (dict, list)) else child
            changed = changed or new is not child
            out[key] = new
        if has_marker_key(value):
            return {LIT: out}
        return out if changed else value
    if isinstance(value, list):
        items = [escape(item) if isinstance(item, (dict, list)) else item for item in value]
        return items if any(a is not b for a, b in zip(items, value)) else value
    return value


def vars_value(variables: dict[str, Any]) -> dict[str, Any]:
    """The run's variables as one stored value (a record's ``["s", [], value]``).

    The variables' root holds names, taken literally; as a value it is an object like any other,
    so names that use a marker key are wrapped in ``{"$lit": ...}``. Only the root is wrapped here
    (each variable's value is the caller's, already in stored form).
    """
    return {LIT: variables} if has_marker_key(variables) else variables


def vars_names(stored: Any) -> dict[str, Any]:
    """The variables by name from their stored form as one value (the inverse of :func:`vars_value`).

    Raises :class:`ValueError` for anything but an object or a ``$lit`` wrapper.
    """
    if isinstance(stored, dict):
        kind = marker_kind(stored)
        if kind is None:
            return stored
        if kind == "lit":
            names: dict[str, Any] = stored[LIT]
            return names
    raise ValueError("only an object may replace all vars")


def run_value(run: dict[str, Any]) -> dict[str, Any]:
    """The run part of a state document as one stored value, for walkers that read values
    (resolving, showing, finding references).

    In a state document ``run.vars`` holds names literally (a variable may be named ``$v``);
    as a value its root is wrapped in ``$lit`` when a name uses a marker key. Returns ``run``
    itself when nothing needed wrapping.
    """
    variables = run.get("vars")
    if isinstance(variables, dict) and has_marker_key(variables):
        return {**run, "vars": {LIT: variables}}
    return run


def stored_run(run: dict[str, Any]) -> dict[str, Any]:
    """The run part of a state document from a run's plain form (``RunState.to_dict()``): every
    value in stored form (user objects that use a marker key wrapped in ``$lit``), ``vars`` by
    name. The inverse of resolving :func:`run_value`."""
    variables = run.get("vars")
    rest = escape({k: v for k, v in run.items() if k != "vars"})
    if isinstance(variables, dict):
        rest["vars"] = {name: escape(value) for name, value in variables.items()}
    return rest  # type: ignore[no-any-return]


def document_value(document: dict[str, Any]) -> dict[str, Any]:
    """A state document as one stored value (its ``run`` through :func:`run_value`)."""
    run = document.get("run")
    if isinstance(run, dict):
        shaped = run_value(run)
        if shaped is not run:
            return {**document, "run": shaped}
    return document


def secret_marker(commitment: str, shown: str) -> dict[str, str]:
    """The marker of a redacted secret."""
    return {SECRET: commitment, SHOWN: shown}


def show(value: Any) -> Any:
    """``value`` as readers display it: secrets as their ``$shown`` text, ``$lit`` unwrapped.

    Stored-value markers are left as they are (see :func:`~abstractruntime.core.values.ValueTable.resolve`
    to resolve them). Returns ``value`` itself when there is nothing to show differently.
    """
    # Most documents hold no marker at all: one pass that builds nothing says so (an index
    # rebuild shows every run's checkpoint); only a document with a marker key is rebuilt.
    return _show(value) if _has_marker(value) else value


def _has_marker(value: Any) -> bool:
    """Whether any object in ``value`` uses a marker key (nothing is built)."""
    if isinstance(value, dict):
        if has_marker_key(value):
            return True
        for item in value.values():
            if (isinstance(item, (dict, list)) and item) and _has_marker(item):
                return True
        return False
    if isinstance(value, list):
        for item in value:
            if (isinstance(item, (dict, list)) and item) and _has_marker(item):
                return True
    return False


def _show(value: Any) -> Any:
    """What :func:`show` returns, built (the document holds a marker key somewhere)."""
    if isinstance(value, dict):
        if has_marker_key(value):
            kind = marker_kind(value)
            if kind == "secret":
                return value[SHOWN]
            if kind == "lit":
                inner = value[LIT]
                return {k: _show(v) for k, v in inner.items()}
            return value
        out = {k: _show(v) for k, v in value.items()}
        return out if any(out[k] is not value[k] for k in value) else value
    if isinstance(value, list):
        items = [_show(item) for item in value]
        return items if any(a is not b for a, b in zip(items, value)) else value
    return value


__all__ = ["EXT", "ITEMS", "LIT", "MARKER_KEYS", "REF", "SECRET", "SHOWN", "VAL", "document_value", "escape",
           "has_marker_key", "marker_kind", "run_value", "secret_marker", "show", "stored_run", "vars_names", "vars_value"]
