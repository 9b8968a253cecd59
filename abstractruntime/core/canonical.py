"""Canonical JSON and record hashing — pure functions, property-tested.

Canonical form (documented in docs/provenance.md, pinned by test vectors): keys sorted by
code point, separators ``(',', ':')``, UTF-8 without ``\\u`` escaping of non-ASCII, NaN and
Infinity refused. Python's float repr is the shortest round-tripping text, stable across
platforms, so the same record always hashes the same. (This is not RFC 8785: that scheme
formats numbers like JavaScript, e.g. ``1.0`` as ``1``; ours keeps Python's ``1.0``.)

A value that cannot be stored — a reference cycle (``vars["self"] = vars``), a set, an
object, a non-string key, NaN — raises :class:`InvalidInputError` naming the path to it
(``run.vars.self``), at once: the encoder's own cycle check stops a cycle on first
re-entry, and the path is worked out only after a failure, so valid values pay nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Optional

from .errors import InvalidInputError, PayloadTooLargeError
from .jcs import jcs
from .storable import CONTAINERS as _CONTAINERS
from .storable import find_unstorable, format_path  # the messages of canonical_json name the path

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

HASH_EXCLUDED_FIELDS = ("record_hash", "signature")

# One ledger line (or resume payload) may not exceed this; large values belong in artifacts.
MAX_RECORD_BYTES = 8 * 1024 * 1024

# check_circular=True is the default and what turns a cycle into an immediate ValueError
# instead of unbounded recursion; it is spelled out because the hang it prevents is silent.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                            check_circular=True)



def _check_keys(value: Any, root: str = "") -> Optional[str]:
    """The path of the first non-string object key, or ``None``.

    ``json`` would silently turn ``{1: x}`` into ``{"1": x}``, so such keys are refused.
    Only called on values the encoder accepted, so the value is acyclic and this ends.
    """
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())] if isinstance(value, _CONTAINERS) else []
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"object key {key!r} at {format_path(path, root)} is not a string"
                if isinstance(child, _CONTAINERS):
                    stack.append((child, (*path, key)))
        else:
            stack.extend((child, (*path, i)) for i, child in enumerate(item) if isinstance(child, _CONTAINERS))
    return None


def _has_bad_key(value: Any) -> bool:
    """Fast check for a non-string key anywhere (no path bookkeeping on the hot path)."""
    stack = [value] if isinstance(value, _CONTAINERS) else []
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if key.__class__ is not str and not isinstance(key, str):
                    return True
                if isinstance(child, _CONTAINERS):
                    stack.append(child)
        else:
            stack.extend(child for child in item if isinstance(child, _CONTAINERS))
    return False


def canonical_json(value: Any, *, root: str = "") -> bytes:
    """The canonical UTF-8 bytes of ``value`` (:class:`InvalidInputError` if it is not JSON data).

    The error message names what is wrong and where, ``root`` being the name of ``value``:
    ``canonical_json(run.vars, root="vars")`` of a self-containing dict says ``Value is not
    canonical JSON: it contains a reference cycle at vars.self (a container that contains itself)``.
    """
    try:
        encoded = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(_explain(value, exc, root)) from None
    # Keys are checked after encoding: the encoder has then proved the value acyclic.
    if _has_bad_key(value):
        raise InvalidInputError(f"Value is not canonical JSON: {_check_keys(value, root)}")
    try:
        return encoded.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate in some string
        raise InvalidInputError(f"Value is not canonical JSON: a string is not valid Unicode ({exc.reason})") \
            from None


def _explain(value: Any, exc: BaseException, root: str) -> str:
    if isinstance(exc, RecursionError):
        return "Value is nested too deeply to store"
    try:
        where = find_unstorable(value, root=root)
    except RecursionError:  # pragma: no cover - find_unstorable is iterative; belt and braces
        where = None
    if where is None:
        return f"Value is not canonical JSON: {exc}"
    return f"Value is not canonical JSON: it contains {where}"


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def is_sha256_hex(value: object) -> bool:
    """Whether ``value`` has the form of :func:`sha256_hex`'s result (64 lower-case hex digits)."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the canonical form of ``record`` without ``record_hash`` and ``signature``:
    RFC 8785 for format-3 and later records, this module's Python form for older ones."""
    body = {k: v for k, v in record.items() if k not in HASH_EXCLUDED_FIELDS}
    if isinstance(record.get("format"), int) and record["format"] >= 3:
        return sha256_hex(jcs(body))
    return sha256_hex(canonical_json(body))


def check_size(encoded: bytes, *, what: str, limit: int = MAX_RECORD_BYTES) -> None:
    """Refuse ``encoded`` over ``limit`` bytes with a message that says what to do instead."""
    if len(encoded) > limit:
        raise PayloadTooLargeError(
            f"{what} is {len(encoded):,} bytes, over the {limit:,}-byte limit; "
            "store large values as artifacts and keep a reference",
            size=len(encoded),
            limit=limit,
        )
