"""RFC 8785 (JSON Canonicalization Scheme) — the canonical form of format-3 records — pure functions.

JCS is what an auditor's off-the-shelf library produces in any language (docs/file-format.md):
members sorted by the UTF-16 code units of their names, no whitespace, strings as ECMAScript's
``JSON.stringify`` writes them, numbers as ECMAScript writes an IEEE-754 double (``1.0`` → ``1``,
``1e-7`` → ``1e-7``, ``1e21`` → ``1e+21``).

:func:`jcs` refuses, naming the path, what JCS cannot carry exactly: integers beyond ±(2**53 - 1),
NaN and infinities, non-string object keys, lone surrogates, and anything that is not JSON data.

Speed: one iterative walk inspects the value; when it holds no float that Python writes
differently from ECMAScript and no key whose UTF-16 order differs from its code-point order
(both rare in records), the standard library's C encoder writes it. Otherwise a small Python
encoder does.
"""

from __future__ import annotations

import json
from typing import Any

from .storable import find_unstorable, format_path
from .errors import InvalidInputError

MAX_SAFE_INTEGER = 2**53 - 1

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                            check_circular=True)
_encode_string = json.encoder.encode_basestring  # C: JSON.stringify's escaping

# Code points whose UTF-16 order differs from their code-point order: surrogate pairs (beyond
# the BMP) sort before U+E000..U+FFFF in UTF-16. Keys below U+E000 sort the same either way.
_ORDER_SENSITIVE = "\ue000"


class _Refused(Exception):
    """The value holds something JCS cannot carry."""


_INF = float("inf")


def es_number(value: float) -> str:
    """``value`` as ECMAScript's ``Number.prototype.toString`` writes it (finite values only)."""
    if value == 0:
        return "0"  # also -0.0: JCS writes it as 0
    text = repr(value)
    sign = ""
    if text[0] == "-":
        sign, text = "-", text[1:]
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0") or "0"
    k, n = len(digits), point
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    exp = ("+" if e >= 0 else "-") + str(abs(e))
    return sign + (digits if k == 1 else digits[0] + "." + digits[1:]) + "e" + exp


def _float_is_plain(value: float) -> bool:
    """True when Python's repr of ``value`` is already ECMAScript's (no exponent, not integral)."""
    text = repr(value)
    return "e" not in text and not text.endswith(".0") and text not in ("nan", "inf", "-inf")


def _reads_back_as_big_int(value: float) -> bool:
    """A whole float that ECMAScript writes without exponent or point but beyond ±(2**53 - 1): it
    would read back as an integer JCS cannot carry."""
    return value.is_integer() and MAX_SAFE_INTEGER < abs(value) < 1e21


def _inspect(value: Any) -> bool:
    """Whether ``value`` needs the Python encoder (an ECMAScript-formatted float, or UTF-16 key order).

    Raises :class:`_Refused` for what JCS cannot carry (:func:`_explain` then says where): no path
    is kept on the way, so valid values pay only for the walk.
    """
    slow = False
    stack: list[Any] = [value]
    seen: set[int] = set()  # containers walked once: a cycle is left for the encoder to report
    held: list[Any] = []
    while stack:
        item = stack.pop()
        cls = item.__class__
        if cls is dict:
            if id(item) in seen:
                continue
            seen.add(id(item))
            for key, child in item.items():
                if key.__class__ is not str:
                    raise _Refused
                if not key.isascii() and max(key) >= _ORDER_SENSITIVE:
                    slow = True
                if child.__class__ is not str:
                    stack.append(child)
        elif cls is list or cls is tuple:
            if id(item) in seen:
                continue
            seen.add(id(item))
            stack.extend(item)
        elif cls is str or cls is bool or item is None:
            continue
        elif cls is int:
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                raise _Refused
        elif cls is float:
            if not _float_is_plain(item):
                if item != item or item in (_INF, -_INF) or _reads_back_as_big_int(item):
                    raise _Refused
                slow = True
        elif isinstance(item, (str, bool)):
            continue  # a str subclass (a str Enum) is written as its text
        elif isinstance(item, int):
            stack.append(int(item))  # an IntEnum is written as its number
        elif isinstance(item, float):
            stack.append(float(item))
        elif isinstance(item, (dict, list, tuple)):
            # A subclass, walked as a copy the walk keeps alive: a copy freed early could give
            # its id to the next one, which ``seen`` would then skip unwalked.
            copy: Any = dict(item) if isinstance(item, dict) else list(item)
            held.append(copy)
            stack.append(copy)
        else:
            raise _Refused
    return slow


def _explain(value: Any, root: str) -> str:
    """Why ``value`` is refused, with the path to the first part JCS cannot carry."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    seen: set[int] = set()
    while stack:
        item, path = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, int):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                return (f"Value is not storable: the integer {item} at {format_path(path, root)} is beyond "
                        "±(2**53 - 1), which JSON (RFC 8785) cannot carry exactly; store it as a string")
            continue
        if isinstance(item, (dict, list, tuple)):
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        return f"Value is not canonical JSON: object key {key!r} at {format_path(path, root)} is not a string"
                    stack.append((child, (*path, key)))
            else:
                stack.extend((child, (*path, i)) for i, child in enumerate(item))
            continue
        if isinstance(item, float):
            if item != item or item in (_INF, -_INF):
                return (f"Value is not canonical JSON: {item!r} at {format_path(path, root)} "
                        "(NaN and Infinity are not JSON)")
            if _reads_back_as_big_int(item):
                return (f"Value is not storable: the number {item!r} at {format_path(path, root)} is a whole number "
                        "beyond ±(2**53 - 1), which JSON (RFC 8785) cannot carry exactly; store it as a string")
            continue
        return (f"Value is not canonical JSON: it contains a value of type {type(item).__name__} at "
                f"{format_path(path, root)}, which is not JSON data")
    return "Value is not canonical JSON"


def jcs(value: Any, *, root: str = "") -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``value`` (:class:`InvalidInputError` if it cannot be).

    ``root`` names ``value`` in error messages (``jcs(vars, root="vars")`` → ``vars.items[3]``).
    """
    try:
        text = "".join(_encode(value)) if _inspect(value) else _ENCODER.encode(value)
    except _Refused:
        raise InvalidInputError(_explain(value, root)) from None
    except RecursionError:
        raise InvalidInputError("Value is nested too deeply to store") from None
    except ValueError as exc:  # a reference cycle, found by the encoder
        where = find_unstorable(value, root=root)
        raise InvalidInputError(f"Value is not canonical JSON: it contains {where}" if where
                                else f"Value is not canonical JSON: {exc}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"Value is not canonical JSON: a string is not valid Unicode ({exc.reason})") from None


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _encode(value: Any) -> list[str]:
    """The slow path: JCS text pieces, iteratively (no recursion limit on depth)."""
    out: list[str] = []
    # Work items: ("v", value) to encode a value, ("t", text) to emit text.
    work: list[tuple[str, Any]] = [("v", value)]
    seen: set[int] = set()
    while work:
        tag, item = work.pop()
        if tag == "t":
            out.append(item)
            continue
        if tag == "x":  # leaving a container
            seen.discard(item)
            continue
        if isinstance(item, str):
            out.append(_encode_string(item))
        elif item is True:
            out.append("true")
        elif item is False:
            out.append("false")
        elif item is None:
            out.append("null")
        elif isinstance(item, int):
            out.append(str(int(item)))
        elif isinstance(item, float):
            out.append(es_number(float(item)))
        elif isinstance(item, dict):
            if id(item) in seen:
                raise ValueError("Circular reference detected")
            seen.add(id(item))
            keys = sorted(item, key=_utf16_key)
            work.append(("x", id(item)))
            work.append(("t", "}"))
            for index in range(len(keys) - 1, -1, -1):
                key = keys[index]
                work.append(("v", item[key]))
                work.append(("t", ("," if index else "") + _encode_string(key) + ":"))
            work.append(("t", "{"))
        else:  # list or tuple (checked by _inspect)
            if id(item) in seen:
                raise ValueError("Circular reference detected")
            seen.add(id(item))
            work.append(("x", id(item)))
            work.append(("t", "]"))
            for index in range(len(item) - 1, -1, -1):
                work.append(("v", item[index]))
                if index:
                    work.append(("t", ","))
            work.append(("t", "["))
    return out


def is_jcs_line(line: bytes, parsed: Any) -> bool:
    """True when ``line`` is exactly the JCS form of ``parsed`` (the value read from it)."""
    try:
        return jcs(parsed) == line
    except InvalidInputError:
        return False


__all__ = ["MAX_SAFE_INTEGER", "es_number", "is_jcs_line", "jcs"]
