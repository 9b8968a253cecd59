"""An independent verifier of abstractruntime ledgers, written from docs/file-format.md alone.

It imports nothing from the package: only the Python standard library. Run it as a script on a
ledger file (``python independent_verifier.py runs/<id>/ledger.jsonl``); it prints ``ok`` and
the head hash, or the first problem, and exits 0 or 1. It checks, for every line:

- formats 3 and 4: the line is exactly the RFC 8785 (JCS) form of its content; ``record_hash``
  is the SHA-256 of the JCS form of the record without ``record_hash`` and ``signature``;
- a format newer than 4 is refused (not misread), and so is a format-1 or format-2 record after a
  format-3 or format-4 one (formats never go down), and a first format-3 or format-4 record after
  older ones that does not carry the whole state;
- formats 1 and 2: ``record_hash`` over the older canonical form (keys sorted by code point,
  compact separators, numbers as Python writes them);
- the chain: ``seq`` 1, 2, 3, ...; ``prev_hash`` the previous ``record_hash`` (null first);
  the first record names the run;
- stored values: every ``{"$v": ID}`` refers to a ``{"$val": V}`` (id ``sha256(JCS(V))``) or an
  ``{"$ext": ID, "$items": [...]}`` (id ``sha256(JCS(that object))``) defined in this record or
  an earlier one; markers have their documented shapes.

It replays one part of the state: where the run is (:func:`nodes`) — the node each record
leaves the run at, by the kind rules of the page (an effect's intent makes it pending; a
format-4 outcome that closes it moves the run to the node the intent named, unless its delta
names one) and the ``current_node`` and ``pending`` a delta sets. What it does not replay is the
rest of the state (state digests need every replay rule of the page).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from typing import Any, Optional

MARKERS = {"$v", "$val", "$ext", "$items", "$secret", "$shown", "$lit"}
NEWEST_FORMAT = 4


# -- RFC 8785 -----------------------------------------------------------------------------------

def _number(value: float) -> str:
    """ECMAScript Number::toString, from the shortest digits that read back as ``value``."""
    if value == 0:
        return "0"
    if value < 0:
        return "-" + _number(-value)
    digits, exponent = _shortest(value)  # value = 0.DIGITS x 10**exponent
    k, n = len(digits), exponent
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"


def _shortest(value: float) -> tuple[str, int]:
    """The fewest significant digits that round-trip, and where the point goes."""
    for significant in range(1, 18):
        text = f"{value:.{significant - 1}e}"
        if float(text) == value:
            break
        # The nearest string of that many digits may fall outside the value's rounding interval
        # while its neighbour on the other side lies inside (the interval is lopsided at a power
        # of two): 2**-24 is 5.960464477539063e-8, not 5.960464477539062e-8.
        mantissa, exp = text.split("e")
        whole = int(mantissa.replace(".", "")) + (1 if float(text) < value else -1)
        other = f"{whole}e{int(exp) - significant + 1}"
        if float(other) == value:
            digits = str(whole)
            text = f"{digits[0]}.{digits[1:]}e{int(exp) + len(digits) - significant}"
            break
    mantissa, exp = text.split("e")
    digits = mantissa.replace(".", "").rstrip("0") or "0"
    return digits, int(exp) + 1


def _string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif code < 0x20:
            out.append({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(code, f"\\u{code:04x}"))
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def jcs(value: Any) -> str:
    """The JCS text of a parsed JSON value."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError("NaN/Infinity")
        return _number(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
    return "{" + ",".join(_string(k) + ":" + jcs(value[k]) for k in keys) + "}"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def older_canonical(value: Any) -> str:
    """The canonical form of format-1/2 records."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k not in ("record_hash", "signature")}
    if record.get("format", 1) >= 3:
        return sha256(jcs(body))
    return sha256(older_canonical(body))


# -- stored values ------------------------------------------------------------------------------

def _values(value: Any, defined: set[str], used: list[str]) -> None:
    """File the definitions in ``value`` (inner first) and list the ids it refers to."""
    if isinstance(value, list):
        for item in value:
            _values(item, defined, used)
        return
    if not isinstance(value, dict):
        return
    keys = set(value)
    if not keys & MARKERS:
        for item in value.values():
            _values(item, defined, used)
        return
    if keys == {"$v"}:
        used.append(value["$v"])
    elif keys == {"$val"}:
        _values(value["$val"], defined, used)
        defined.add(sha256(jcs(value["$val"])))
    elif keys == {"$ext", "$items"}:
        used.append(value["$ext"])
        _values(value["$items"], defined, used)
        defined.add(sha256(jcs(value)))
    elif keys == {"$secret", "$shown"}:
        if not (isinstance(value["$secret"], str) and len(value["$secret"]) == 64):
            raise ValueError("a $secret marker needs a 64-hex commitment")
    elif keys == {"$lit"}:
        for item in value["$lit"].values():
            _values(item, defined, used)
    else:
        raise ValueError(f"malformed marker with keys {sorted(keys)}")


# -- the ledger ---------------------------------------------------------------------------------

RUN_FIELDS = ("workflow_id", "status", "current_node", "waiting", "output", "error", "created_at", "actor_id",
              "parent_run_id")
KERNEL_FIELDS = ("effects", "pending", "metadata", "workflow", "origin")


def _whole_state(record: dict[str, Any]) -> bool:
    """Whether the record's delta sets every run and kernel field and replaces all vars."""
    delta = record.get("delta")
    if not isinstance(delta, dict) or any(name not in delta for name in RUN_FIELDS + KERNEL_FIELDS):
        return False
    ops = delta.get("vars")
    return isinstance(ops, list) and any(isinstance(op, list) and op[:2] == ["s", []] and len(op) == 3 for op in ops)


def verify_lines(lines: list[bytes]) -> tuple[bool, Optional[str], str]:
    """``(ok, head hash, message)`` for the newline-terminated lines of a ledger file."""
    prev: Optional[str] = None
    run_id: Optional[str] = None
    defined: set[str] = set()
    newest = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            return False, prev, f"line {number}: no newline (a torn tail)"
        text = raw[:-1].decode("utf-8")
        record = json.loads(text)
        fmt = record.get("format")
        if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= NEWEST_FORMAT:
            return False, prev, f"line {number}: format {fmt!r} is not one this verifier reads (1 to {NEWEST_FORMAT})"
        if fmt < 3 <= newest:
            return False, prev, f"line {number}: format {fmt} after a format-{newest} record (formats never go down)"
        if fmt >= 3 and 1 <= newest < 3 and not _whole_state(record):
            return False, prev, f"line {number}: the first format-{fmt} record after older ones lacks the whole state"
        newest = max(newest, fmt)
        if record.get("seq") != number:
            return False, prev, f"line {number}: seq {record.get('seq')} where {number} was expected"
        if record.get("prev_hash") != prev:
            return False, prev, f"line {number}: prev_hash does not continue the chain"
        if fmt >= 3 and jcs(record) != text:
            return False, prev, f"line {number}: not the JCS form of its content"
        if record_hash(record) != record.get("record_hash"):
            return False, prev, f"line {number}: record_hash does not match the content"
        if number == 1:
            run_id = record.get("run_id")
            if not isinstance(run_id, str):
                return False, prev, "line 1: the first record names no run"
        elif "run_id" in record and record["run_id"] != run_id:
            return False, prev, f"line {number}: a record of another run"
        if fmt >= 3:
            used: list[str] = []
            try:
                for name in ("effect", "result", "delta"):
                    _values(record.get(name), defined, used)
            except ValueError as exc:
                return False, prev, f"line {number}: {exc}"
            missing = [vid for vid in used if vid not in defined]
            if missing:
                return False, prev, f"line {number}: refers to a stored value never defined ({missing[0][:12]}...)"
        prev = record["record_hash"]
    return True, prev, "ok"


# -- where the run is -------------------------------------------------------------------------

def nodes(lines: list[bytes]) -> list[Optional[str]]:
    """The run's ``current_node`` right after each line (``None`` while it is not known: format-1
    records carry no state change). The lines are taken as they are: verify them first."""
    node: Optional[str] = None
    pending: Optional[dict[str, Any]] = None
    out: list[Optional[str]] = []
    for raw in lines:
        record = json.loads(raw)
        fmt = record.get("format")
        delta = record.get("delta") if isinstance(record.get("delta"), dict) else {}
        if fmt >= 3:
            kind, status, effect_id = record.get("kind"), record.get("status"), record.get("effect_id")
            closes = pending is not None and effect_id is not None and pending.get("effect_id") == effect_id
            if kind == "effect" and status == "started":
                named = record["next_node"] if "next_node" in record else \
                    (pending.get("next_node") if closes and pending is not None else None)
                pending = {"effect_id": effect_id, "next_node": named}
            elif kind == "effect" and status in ("completed", "waiting") and closes and pending is not None:
                if fmt >= 4 and status == "completed" and isinstance(pending.get("next_node"), str):
                    node = pending["next_node"]  # the outcome implies the node its intent named
                pending = None
        if "pending" in delta:
            pending = delta["pending"] if isinstance(delta["pending"], dict) else None
        if "current_node" in delta:
            node = delta["current_node"]
        out.append(node)
    return out


def main(argv: list[str]) -> int:
    with open(argv[1], "rb") as handle:
        lines = handle.readlines()
    ok, head, message = verify_lines(lines)
    print(f"{message} {head or ''}".strip())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
