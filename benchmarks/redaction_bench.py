"""What redaction costs per ledger record (prints the times; asserts nothing).

    python -m benchmarks.redaction_bench
    python -m benchmarks.redaction_bench --repeat 9 --json

The runtime redacts the effect, result and delta of every record before it is hashed, so
this is a per-step cost. Each shape below is a record part the runtime writes often: a
plain step's delta, an LLM request (system prompt, conversation, tools) and its answer, tool
results with log text, an HTTP payload with headers and a URL, and an error message. Times are
``Redactor().redact_collect`` (what the runtime calls), best of ``--repeat`` rounds of
``--number`` calls, in microseconds per call; ``fresh keys`` judges keys never seen before
(the verdict cache is cleared for every round), the cost the first record of a run pays.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

LOREM = ("The quarterly report shows revenue up 4% against plan; churn stayed at 2.1%, and the "
         "support backlog fell to 37 tickets after the migration on 12:30 UTC. ")


def shapes() -> dict[str, Any]:
    """Record parts as the runtime writes them (no secret in most: the common case)."""
    messages = [{"role": "system", "content": "You are a careful assistant. " + LOREM * 3}]
    for i in range(6):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: " + LOREM * 2})
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "description": LOREM,
                                               "parameters": {"type": "object", "properties": {
                                                   "query": {"type": "string"}, "limit": {"type": "integer"}}}}}
             for i in range(4)]
    return {
        "plain delta": {"vars": [["s", ["i"], 41], ["s", ["note"], "step 41 done"]], "node": "step",
                        "status": "running"},
        "llm request": {"type": "llm_call", "payload": {"messages": messages, "tools": tools, "params": {
            "temperature": 0.2, "max_tokens": 512, "model": "gpt-4o-mini", "base_url": "https://api.example.com/v1"}},
            "result_key": "answer"},
        "llm result": {"content": LOREM * 4, "tool_calls": [{"name": "tool_1", "arguments": {"query": "q3 revenue",
                       "limit": 5}, "call_id": "call_1"}], "model": "gpt-4o-mini", "finish_reason": "stop",
                       "usage": {"prompt_tokens": 812, "completion_tokens": 120, "total_tokens": 932}},
        "tool results": {"mode": "executed", "results": [
            {"call_id": f"c{i}", "success": True, "error": None,
             "output": f"GET /v1/items?page={i}&sort=asc -> 200 in 31 ms; host=api.example.com user=ann " + LOREM}
            for i in range(5)]},
        "http payload": {"url": "https://api.example.com/v1/items?page=2&api_key=abcdef123456",
                         "headers": [["Authorization", "Bearer abcDEF1234567890"], ["Accept", "application/json"]],
                         "body": {"query": "revenue", "password": "hunter2", "retries": 3}},
        "error text": {"error": "ConnectionError: could not reach postgresql://app:s3cr3t@db.internal:5432/app "
                                "(timeout=30s, attempt=3); see https://status.example.com"},
    }


def _best(repeat: int, number: int, fn: Callable[[], Any], before: Callable[[], Any] = lambda: None) -> float:
    best = float("inf")
    for _ in range(repeat):
        before()
        started = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - started) / number)
    return best * 1e6


def measure(repeat: int = 7, number: int = 2000) -> dict[str, float]:
    """Microseconds per ``redact_collect`` call for each shape, and per fresh key judged."""
    from abstractruntime.core.redaction import Redactor

    redactor = Redactor()
    out = {name: _best(repeat, number, lambda v=value: redactor.redact_collect(v)) for name, value in shapes().items()}
    keys = [f"{prefix}_{i}" for i in range(50) for prefix in ("field", "userPin", "db_pass", "passenger", "max_tokens",
                                                               "nextPageToken", "clientSecret", "bypass")]

    def judge_all() -> None:
        for key in keys:
            redactor.is_secret_key(key)

    out["fresh keys (per key)"] = _best(repeat, 1, judge_all, before=redactor._verdicts.clear) / len(keys)
    return out


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redaction_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="rounds; the best is kept [default: 7]")
    parser.add_argument("--number", type=int, default=2000, help="calls per round [default: 2000]")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = measure(args.repeat, args.number)
    if args.json:
        print(json.dumps({k: round(v, 2) for k, v in figures.items()}, indent=2))
    else:
        for name, micros in figures.items():
            print(f"{name:<22} {micros:8.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
