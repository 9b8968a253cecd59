"""Shared helpers: JSON-safe conversion, tool-call normalisation, secret scrubbing, lazy import.

Nothing here imports AbstractCore or httpx at module level: importing the integration package
must stay cheap and must not touch the host's logging configuration.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
import sys
from dataclasses import asdict, is_dataclass
from types import ModuleType
from typing import Any, Iterable, Mapping, Optional

from ...core.canonical import canonical_json, sha256_hex
from ...core.errors import InvalidInputError, MissingExtraError

REDACTED = "[REDACTED]"

# Header names whose values are credentials; they are never echoed into results or errors.
SECRET_HEADER_NAMES = frozenset(
    {"authorization", "proxy-authorization", "x-abstractcore-provider-api-key", "x-api-key", "api-key", "cookie"}
)

_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
_KEY_VALUE_RE = re.compile(
    r"(?i)((?:api[_-]?key|access[_-]?token|auth[_-]?token|secret|password|authorization)[\"']?\s*[:=]\s*[\"']?)"
    r"[^\s\"',;&}]{4,}"
)
_SK_RE = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}")
_URL_USERINFO_RE = re.compile(r"(?i)\b(https?://)[^/\s@]+@")


def jsonable(value: Any) -> Any:
    """A JSON-safe copy of ``value``: dict keys become strings, tuples lists, odd objects strings.

    Dataclasses and pydantic models are converted field by field. Non-finite floats become
    strings because the ledger refuses NaN and Infinity.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    for method in ("model_dump", "dict"):  # pydantic v2, then v1
        dump = getattr(value, method, None)
        if callable(dump):
            try:
                return jsonable(dump())
            except Exception:  # a foreign .dict() with other semantics: fall through to str
                break
    return str(value)


def canonical_sha256(value: Any) -> str:
    """Hex SHA-256 of the ledger's canonical JSON of :func:`jsonable` ``(value)`` (sorted keys, compact, UTF-8)."""
    return sha256_hex(canonical_json(jsonable(value)))


def stable_call_id(index: int, name: str, arguments: Any) -> str:
    """A deterministic call id for a tool call that came without one (prompted tool calling).

    Derived from position, name and arguments, so a retried or replayed step produces the
    same id and results can be matched to calls across processes.
    """
    digest = canonical_sha256({"i": index, "name": name, "arguments": arguments})
    return f"call_{index}_{digest[:12]}"


def parse_arguments(raw: Any) -> Any:
    """Tool arguments as a dict when possible: JSON strings are parsed, ``None`` is ``{}``.

    Anything that is not a JSON object is returned unchanged so the executor can report it
    as a failed call (bad arguments are a per-call failure, never a crash).
    """
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            return raw
        return parsed
    if isinstance(raw, Mapping):
        return jsonable(raw)
    return jsonable(raw)


def normalize_tool_call(call: Any, index: int) -> dict[str, Any]:
    """One tool call as ``{name, arguments, call_id}``.

    Accepts our own shape, AbstractCore's ``ToolCall`` / dicts, and OpenAI's
    ``{"id", "type": "function", "function": {"name", "arguments": "<json>"}}``.
    """
    if not isinstance(call, Mapping):
        call = jsonable(call)
    if not isinstance(call, Mapping):
        raise InvalidInputError(f"tool call #{index} is not an object: {call!r:.80}")
    function = call.get("function")
    if isinstance(function, Mapping):  # OpenAI wire format
        name = function.get("name")
        arguments = parse_arguments(function.get("arguments"))
        call_id = call.get("id") or call.get("call_id")
    else:
        name = call.get("name")
        arguments = parse_arguments(call.get("arguments"))
        call_id = call.get("call_id") or call.get("id")
    name = "" if name is None else str(name)
    if not call_id:
        call_id = stable_call_id(index, name, arguments)
    return {"name": name, "arguments": arguments, "call_id": str(call_id)}


def normalize_tool_calls(calls: Optional[Iterable[Any]]) -> list[dict[str, Any]]:
    """A list of tool calls in the ``{name, arguments, call_id}`` shape (empty for ``None``)."""
    if calls is None:
        return []
    if isinstance(calls, (str, bytes, Mapping)):
        raise InvalidInputError("tool_calls must be a list of tool call objects")
    return [normalize_tool_call(call, i) for i, call in enumerate(calls)]


def scrub(text: str, secrets: Iterable[Optional[str]] = ()) -> str:
    """``text`` with known secret values and credential-looking fragments replaced.

    Used on every error string and echoed server message, so a key or bearer token never
    reaches a run's ``error``, the ledger or a log line.
    """
    out = str(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, REDACTED)
    out = _BEARER_RE.sub(lambda m: f"{m.group(1)} {REDACTED}", out)
    out = _KEY_VALUE_RE.sub(lambda m: f"{m.group(1)}{REDACTED}", out)
    out = _SK_RE.sub(REDACTED, out)
    out = _URL_USERINFO_RE.sub(lambda m: f"{m.group(1)}{REDACTED}@", out)
    return out


def secret_header_values(headers: Mapping[str, str]) -> list[str]:
    """The values of credential headers (and of any header whose name says key/token/secret)."""
    values: list[str] = []
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in SECRET_HEADER_NAMES or any(w in lowered for w in ("key", "token", "secret", "auth")):
            values.append(str(value))
            # "Bearer abc" → also scrub the bare token wherever it appears alone
            parts = str(value).split(None, 1)
            if len(parts) == 2:
                values.append(parts[1])
    return values


def abstractcore_installed() -> bool:
    """True when the ``abstractcore`` package can be imported (checked without importing it)."""
    if "abstractcore" in sys.modules:  # None there means "blocked": treat as absent
        return sys.modules["abstractcore"] is not None
    try:
        return importlib.util.find_spec("abstractcore") is not None
    except (ImportError, ValueError):
        return False


def import_abstractcore(purpose: str) -> ModuleType:
    """Import AbstractCore on first use, leaving the host's logging configuration untouched.

    Importing ``abstractcore`` replaces the root logger's handlers with one that writes to
    stdout; the CLI's stdout carries results, so the previous handlers and level are put back.
    Raises :class:`MissingExtraError` when the package is not installed.
    """
    module = sys.modules.get("abstractcore")
    if module is not None:
        return module
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        import abstractcore  # noqa: PLC0415 - lazy on purpose (≈1 s, reconfigures logging)
    except ImportError as exc:
        if (exc.name or "").split(".")[0] == "abstractcore":
            raise MissingExtraError("abstractcore", "abstractcore", purpose) from exc
        raise
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return abstractcore
