"""Ledger records -> timeline rows: a one-line summary, durations, waits and the full detail.

The rows are embedded in the page as JSON and drawn by its script, so nothing here is
HTML: summaries are plain text (the page sets them with ``textContent``).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ..storage.query import timestamp
from .repeats import items_in

SUMMARY_CHARS = 240
# A single record's detail larger than this is cut to a preview in the page (the full
# record stays in the ledger: ``abstractruntime ledger show RUN``).
MAX_DETAIL_CHARS = 200_000
PREVIEW_CHARS = 4_000

# Fields every row shows in its own way; any other field of a record (a newer format's
# additions) is listed as it is under "other fields".
_KNOWN = {"run_id", "step_id", "node_id", "status", "kind", "effect", "result", "error", "started_at",
          "ended_at", "actor_id", "attempt", "idempotency_key", "seq", "prev_hash", "record_hash",
          "signature", "format"}


def parse_time(value: Any) -> Optional[float]:
    """An ISO-8601 timestamp as POSIX seconds, or None (naive stamps are UTC, as everywhere)."""
    return timestamp(value) if isinstance(value, str) else None


def _clip(text: str, limit: int = SUMMARY_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


def _calls(calls: Any) -> str:
    if not isinstance(calls, list):
        return ""
    parts = []
    for call in calls:
        if isinstance(call, dict):
            # A model's tool call names its function inside "function" (OpenAI's shape).
            function = call.get("function")
            inner: dict[str, Any] = function if "name" not in call and isinstance(function, dict) else call
            parts.append(f"{inner.get('name')}({_compact(inner.get('arguments'))})")
    return ", ".join(parts)


def _effect_summary(etype: str, payload: dict[str, Any]) -> str:
    if etype == "llm_call":
        msgs: Any = payload.get("messages")
        count = items_in(msgs) if isinstance(msgs, list) else 0
        last = msgs[-1] if msgs and isinstance(msgs, list) and isinstance(msgs[-1], dict) else {}
        prompt = payload.get("prompt")
        text = last.get("content") if last else prompt
        return f"LLM call, {count} message(s): {_compact(text) if text is not None else ''}"
    if etype == "tool_calls":
        return "tool calls: " + _calls(payload.get("tool_calls"))
    if etype == "ask_user":
        choices = payload.get("choices")
        return f"asks: {_compact(payload.get('prompt'))}" + (f" [{' / '.join(map(str, choices))}]"
                                                            if isinstance(choices, list) else "")
    if etype == "wait_until":
        return f"wait until {payload.get('until')}"
    if etype in ("wait_event", "wait_job"):
        return f"wait for {payload.get('wait_key') or payload.get('key') or payload.get('event') or _compact(payload)}"
    return f"{etype}: {_compact(payload)}"


def _result_summary(etype: str, result: Any) -> str:
    if not isinstance(result, dict):
        return _compact(result) if result is not None else ""
    if etype == "llm_call":
        calls = _calls(result.get("tool_calls"))
        content = result.get("content")
        text = _compact(content) if content else ""
        return "→ " + (text + ("; " if text and calls else "") + (f"calls {calls}" if calls else "") or "(empty)")
    if etype == "tool_calls" and isinstance(result.get("results"), list):
        parts = []
        for res in result["results"]:
            if isinstance(res, dict):
                ok = res.get("success")
                out = res.get("output") if ok else res.get("error")
                parts.append(f"{res.get('name') or res.get('call_id')} {'→' if ok else '✗'} {_compact(out)}")
        return "; ".join(parts)
    return "→ " + _compact(result)


def _wait_info(wait: dict[str, Any]) -> dict[str, Any]:
    details: Any = wait.get("details") if isinstance(wait.get("details"), dict) else {}
    info = {"reason": wait.get("reason"), "prompt": wait.get("prompt"), "choices": wait.get("choices"),
            "wait_key": wait.get("wait_key"), "until": wait.get("until"), "resume_to": wait.get("resume_to_node"),
            "wait_id": wait.get("wait_id"), "free_text": wait.get("allow_free_text")}
    if details.get("tool_calls") is not None:
        info["tool_calls"] = details.get("tool_calls")
        info["calls_sha256"] = details.get("calls_sha256")
    return {k: v for k, v in info.items() if v is not None}


def _summary(rec: dict[str, Any], etype: Optional[str]) -> str:
    kind, status = rec.get("kind"), rec.get("status")
    result, error = rec.get("result"), rec.get("error")
    effect = rec.get("effect") if isinstance(rec.get("effect"), dict) else None
    if error:
        return "✗ " + _compact(error)
    if kind == "unreadable":
        return "unreadable ledger line"
    if kind == "start":
        vars_ = result.get("vars") if isinstance(result, dict) else None
        return "run started" + (f" with {_compact(vars_)}" if vars_ else "")
    if kind == "resume" and isinstance(result, dict):
        payload = result.get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("approval"), dict):
            ap = payload["approval"]
            text = (f"tool calls {ap.get('decision')}: approved {ap.get('approved') or []}, "
                    f"denied {ap.get('denied') or []}")
            return text + (f" ({ap.get('reason')})" if ap.get("reason") else "")
        if isinstance(payload, dict) and "answer" in payload and len(payload) == 1:
            return f"answered: {_compact(payload['answer'])}"
        return f"resumed ({result.get('reason') or '?'}): {_compact(payload)}"
    if kind == "complete" and isinstance(result, dict) and "output" in result:
        return f"completed: {_compact(result.get('output'))}"
    if kind in ("fail", "cancel"):
        return ("failed" if kind == "fail" else "cancelled") + (f": {_compact(result)}" if result else "")
    ext: Any = rec.get("ext") if isinstance(rec.get("ext"), dict) else {}
    if kind == "step" and isinstance(ext.get("step"), dict):  # a code-first step or recorded value
        meta = ext["step"]
        label = f"step {meta.get('name')}" if meta.get("kind") == "step" else f"ctx.{meta.get('kind')}()"
        if status == "started":
            return f"{label} started" + (f" (attempt {meta['attempt']})" if meta.get("attempt") else "")
        return f"{label} → {_compact(result)}"
    if kind == "patch" and isinstance(ext.get("patch"), dict):
        return f"ctx.patched({_compact(ext['patch'].get('name'))}): new path"
    if kind == "upgrade" and isinstance(result, dict):
        return f"upgraded to {str(result.get('to'))[:12]}… (checked by {result.get('checked')})"
    if effect is not None and etype:
        payload = effect.get("payload") if isinstance(effect.get("payload"), dict) else {}
        if status == "started":
            return _effect_summary(etype, payload)
        if status == "waiting" and isinstance(result, dict) and isinstance(result.get("wait"), dict):
            wait = result["wait"]
            calls = (wait.get("details") or {}).get("tool_calls") if isinstance(wait.get("details"), dict) else None
            if calls:
                return f"waits for approval of {_calls(calls)}"
            if wait.get("prompt"):
                return f"waits for an answer: {_compact(wait.get('prompt'))}"
            return f"waits ({wait.get('reason')}) on {wait.get('wait_key') or wait.get('until')}"
        return _result_summary(etype, result)
    if isinstance(result, dict) and isinstance(result.get("next_node"), str):
        return f"→ {result['next_node']}"
    return _compact(result) if result is not None else ""


def _detail_value(value: Any) -> Any:
    """The value itself, or a preview when its JSON is beyond :data:`MAX_DETAIL_CHARS`."""
    if value is None:
        return None
    text = _compact(value)
    if len(text) <= MAX_DETAIL_CHARS:
        return value
    return {"truncated": True, "chars": len(text), "preview": text[:PREVIEW_CHARS]}


def _attempt_key(rec: dict[str, Any]) -> Optional[tuple[Any, ...]]:
    """What pairs an effect's intent with its outcome: its ``effect_id`` (format 3; older
    formats: its ``step_id``) and the attempt."""
    effect_id = rec.get("effect_id")
    if effect_id is not None and not isinstance(effect_id, (dict, list)):
        return ("effect", effect_id, rec.get("attempt"))
    step = rec.get("step_id")
    return ("step", step, rec.get("attempt")) if isinstance(step, str) else None


def build_rows(records: list[dict[str, Any]], *, problems: Optional[dict[int, list[str]]] = None,
               marks: Optional[dict[int, list[dict[str, Any]]]] = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per record, plus totals (``max_ms``, ``max_wait_ms``, counts) for the page.

    A row's ``ms`` is how long its step took: an effect's outcome row, from the effect's
    intent record to the outcome (both records' ``at``: the handler's time, retries each on
    their own); any other record, its own ``started_at`` to ``ended_at`` (a format-3 record is
    made at one instant: 0). ``slowest`` is the seq of the row with the largest ``ms``.
    """
    problems, marks = problems or {}, marks or {}
    rows: list[dict[str, Any]] = []
    t0 = next((t for t in (parse_time(r.get("started_at")) or parse_time(r.get("ended_at")) for r in records)
               if t is not None), None)
    effects_seen: dict[Any, tuple[int, str]] = {}
    waits: dict[Any, float] = {}
    intents: dict[Any, float] = {}  # (effect, attempt) -> when its intent was recorded
    stats: dict[str, Any] = {"max_ms": 0.0, "max_wait_ms": 0.0, "llm_calls": 0, "tool_calls": 0, "waits": 0, "failures": 0,
             "retries": 0, "slowest": None}
    for index, rec in enumerate(records):
        effect = rec.get("effect") if isinstance(rec.get("effect"), dict) else None
        etype = str(effect.get("type")) if effect and effect.get("type") is not None else None
        seq = rec.get("seq") if isinstance(rec.get("seq"), int) else None
        start, end = parse_time(rec.get("started_at")), parse_time(rec.get("ended_at"))
        row: dict[str, Any] = {"i": index, "seq": seq, "kind": rec.get("kind"), "node": rec.get("node_id"),
                               "status": rec.get("status"), "etype": etype, "att": rec.get("attempt"),
                               "sum": _clip(_summary(rec, etype))}
        if start is not None and t0 is not None:
            row["off"] = round((start - t0) * 1000, 3)
        attempt_key = _attempt_key(rec) if effect is not None else None
        if attempt_key is not None and rec.get("status") == "started" and start is not None:
            intents[attempt_key] = start
        elif attempt_key is not None and attempt_key in intents and end is not None:
            # An effect takes from its intent to its outcome (two records): the handler's time.
            start = intents.pop(attempt_key)
        if start is not None and end is not None:
            row["ms"] = round(max(0.0, end - start) * 1000, 3)
        if effect is not None:
            # An effect's records share its effect_id (format 3 gives each record its own step_id).
            key = rec.get("effect_id") if rec.get("effect_id") is not None else rec.get("step_id")
            text = _compact(effect)
            earlier = effects_seen.get(key) if key else None
            if earlier is not None and earlier[1] == text:
                row["eff_ref"] = earlier[0]  # the same effect as the intent row: shown once
            else:
                row["eff"] = _detail_value(effect)
                if key and seq is not None:
                    effects_seen[key] = (seq, text)
        result = rec.get("result")
        if isinstance(result, dict) and isinstance(result.get("wait"), dict):
            row["wait"] = _wait_info(result["wait"])
            stats["waits"] += 1
            if end is not None:
                waits[result["wait"].get("wait_id") or result["wait"].get("wait_key")] = end
        if rec.get("kind") == "resume" and isinstance(result, dict):
            began = waits.get(result.get("wait_id") or result.get("wait_key"))
            if began is not None and end is not None:
                row["wait_ms"] = round(max(0.0, end - began) * 1000, 3)
                stats["max_wait_ms"] = max(stats["max_wait_ms"], row["wait_ms"])
            row["answer"] = _detail_value(result.get("payload"))
            row["by"] = rec.get("actor_id")
        if result is not None and "answer" not in row:
            row["res"] = _detail_value(result)
        if rec.get("error") is not None:
            row["err"] = _detail_value(rec.get("error"))
        if rec.get("status") in ("failed", "unreadable") or rec.get("kind") == "fail":
            stats["failures"] += 1
        if isinstance(rec.get("attempt"), int) and rec["attempt"] > 1 and rec.get("status") == "started":
            stats["retries"] += 1
        if rec.get("status") == "started":
            stats["llm_calls"] += etype == "llm_call"
            stats["tool_calls"] += etype == "tool_calls"
        meta = {"hash": rec.get("record_hash"), "prev": rec.get("prev_hash"), "step": rec.get("step_id"),
                "key": rec.get("idempotency_key"), "actor": rec.get("actor_id"), "t0": rec.get("started_at"),
                "t1": rec.get("ended_at"), "sig": rec.get("signature")}
        row["meta"] = {k: v for k, v in meta.items() if v is not None}
        extra = {k: v for k, v in rec.items() if k not in _KNOWN and v is not None}
        if extra:
            row["extra"] = _detail_value(extra)
        if seq is not None and seq in problems:
            row["bad"] = problems[seq]
        if seq is not None and seq in marks:
            row["marks"] = marks[seq]
        if "ms" in row and row["ms"] > stats["max_ms"]:
            stats["max_ms"] = row["ms"]
            stats["slowest"] = seq
        rows.append(row)
    return rows, stats


__all__ = ["build_rows", "parse_time", "MAX_DETAIL_CHARS"]
