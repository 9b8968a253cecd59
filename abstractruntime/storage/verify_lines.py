"""The fast path of reading one ledger line while verifying: a canonical format-3 or format-4 line, parsed once.

:func:`canonical_record` answers, for the bytes of one line (without its newline), "is this the
RFC 8785 form of a format-3 or format-4 record, and what is the hash of its content?" with one parse, one
encoding by the standard library's C encoder and one SHA-256 — or ``None``, and the caller
takes the careful path (:func:`~abstractruntime.core.jcs.is_jcs_line`,
:func:`~abstractruntime.core.canonical.record_hash`), which then names what is wrong. It never
says yes where the careful path would say no:

- the C encoder writes exactly what :func:`~abstractruntime.core.jcs.jcs` writes except for
  floats Python prints differently from ECMAScript, integers beyond ±(2**53 - 1), NaN and the
  infinities, and keys whose UTF-16 order is not their code-point order. The parse refuses the
  first three as it meets them (the hooks below raise), and a line holding any UTF-8 sequence
  of U+E000 or above (the only characters whose order can differ) is left to the careful path;
- a plain parse keeps the last of duplicate keys, but then the encoding, which has each key
  once, cannot equal the line;
- a canonical line holds its top-level ``"record_hash":"<hash>"`` member verbatim, and members
  are sorted, so the line without it is the canonical form of the record without it — the bytes
  the hash covers. The member is cut only when its text occurs once in the line (so the
  occurrence is the top-level one); a record with a ``signature`` (also outside the hash) takes
  the careful path.

Only the standard library is used.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Optional

from ..core.jcs import MAX_SAFE_INTEGER, es_number
from ..core.records import JCS_FORMATS

def _encoder() -> Any:
    """The C encoder ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``
    uses, called directly (its Python wrapper costs a tenth of the encoding); that wrapper where there is none."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                                check_circular=False).encode
    chunks = make(None, _unencodable, json.encoder.encode_basestring, None, ":", ",", True, False, False)
    return lambda value: "".join(chunks(value, 0))


def _unencodable(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


_ENCODE = _encoder()
# UTF-8 lead bytes of U+E000 and above: the characters whose UTF-16 order may differ.
_ORDER_SENSITIVE = re.compile(rb"[\xee-\xf4]")
_sha256 = hashlib.sha256
_encode_string = json.encoder.encode_basestring  # C: JCS's escaping of a string


class _NotFast(ValueError):
    """The line needs the careful path."""


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or es_number(value) != text:
        raise _NotFast  # not finite, or not written the way ECMAScript writes it
    return value


def _int(text: str) -> int:
    value = int(text)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise _NotFast
    return value


def _constant(text: str) -> Any:
    raise _NotFast  # NaN, Infinity: never canonical


# The C scanner itself: a canonical line has no whitespace around its value to skip.
_SCAN = json.JSONDecoder(parse_float=_float, parse_int=_int, parse_constant=_constant).scan_once  # type: ignore[attr-defined]


def canonical_record(body: bytes) -> Optional[tuple[dict[str, Any], str]]:
    """``(record, sha256 of its content)`` when ``body`` is the canonical line of an unsigned
    format-3 or format-4 record that has a string ``record_hash``; ``None`` when it needs the careful path."""
    try:
        text = body.decode("utf-8")
        doc, end = _SCAN(text, 0)
    except (StopIteration, ValueError, RecursionError):  # _NotFast, a JSON error, UnicodeDecodeError
        return None
    if end != len(text):
        return None
    if doc.__class__ is not dict or doc.get("format") not in JCS_FORMATS or "signature" in doc:
        return None
    stored = doc.get("record_hash")
    if stored.__class__ is not str:
        return None
    try:
        if _ENCODE(doc) != text:
            return None
    except (ValueError, RecursionError):
        return None
    if not body.isascii() and _ORDER_SENSITIVE.search(body) is not None:
        return None
    member = ('"record_hash":' + _encode_string(stored)).encode("utf-8")
    at = body.find(member)
    if at < 1 or body.find(member, at + 1) != -1:
        return None
    end = at + len(member)
    if body[at - 1] == 0x2C:  # ",": cut the comma before it
        hashed = body[:at - 1] + body[end:]
    elif body[end] == 0x2C:  # the first member: cut the comma after it
        hashed = body[:at] + body[end + 1:]
    else:  # the only member
        hashed = body[:at] + body[end:]
    return doc, _sha256(hashed).hexdigest()


__all__ = ["canonical_record"]
