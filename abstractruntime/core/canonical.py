"""Canonical JSON and record hashing — pure functions, property-tested.

Canonical form (documented in docs/provenance.md, pinned by test vectors): keys sorted by
code point, separators ``(',', ':')``, UTF-8 without ``\\u`` escaping of non-ASCII, NaN and
Infinity refused. Python's float repr is the shortest round-tripping text, stable across
platforms, so the same record always hashes the same. (This is not RFC 8785: that scheme
formats numbers like JavaScript, e.g. ``1.0`` as ``1``; ours keeps Python's ``1.0``.)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .errors import InvalidInputError, PayloadTooLargeError

HASH_EXCLUDED_FIELDS = ("record_hash", "signature")

# One ledger line (or resume payload) may not exceed this; large values belong in artifacts.
MAX_RECORD_BYTES = 8 * 1024 * 1024


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _check_keys(value: Any) -> None:
    """Refuse non-string object keys: ``json`` would silently turn ``{1: x}`` into ``{"1": x}``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidInputError(f"Value is not canonical JSON: object key {key!r} is not a string")
                if isinstance(child, (dict, list, tuple)):
                    stack.append(child)
        elif isinstance(item, (list, tuple)):
            stack.extend(child for child in item if isinstance(child, (dict, list, tuple)))


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 bytes of ``value`` (:class:`InvalidInputError` if it is not JSON data)."""
    try:
        _check_keys(value)
        return _ENCODER.encode(value).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"Value is not canonical JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidInputError("Value is nested too deeply to store") from exc


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``record`` without ``record_hash`` and ``signature``."""
    body = {k: v for k, v in record.items() if k not in HASH_EXCLUDED_FIELDS}
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
