"""JSON as the stores write and read it: compact on the way out, strict on the way in.

Hashing uses :func:`abstractruntime.core.canonical.canonical_json` (sorted keys, the bytes a
record hash covers); everything else that is stored goes through :func:`dumps_compact`, and
everything read back through :func:`loads_strict`, which refuses what a careless writer or an
editor could slip in (NaN, Infinity, a key given twice) instead of guessing what it meant.
"""

from __future__ import annotations

import json
from typing import Any


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # in C; a key given twice leaves fewer entries than pairs
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


# One decoder for every read: json.loads given options builds a new decoder (and its scanner) per
# call, which costs as much as parsing a small document. Shared as json's own default one is.
_STRICT = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_object)


def loads_strict(data: bytes | str) -> Any:
    """Parse JSON refusing NaN/Infinity and duplicate keys (raises ``ValueError``)."""
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    if data.startswith("\ufeff"):  # as json.loads refuses it
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", data, 0)
    return _STRICT.decode(data)


def dumps_compact(doc: Any) -> bytes:
    """Serialize for storage: compact, UTF-8, NaN/Infinity refused."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


__all__ = ["loads_strict", "dumps_compact"]
