"""The page shows an agent's conversation once: a long list an earlier row showed is reduced to
one line naming that row, followed by its new items — and nothing else is changed."""

from __future__ import annotations

import copy
import json
from typing import Any

from abstractruntime.report.repeats import MIN_ITEMS, abbreviate, items_in, placeholder
from abstractruntime.report.rows import build_rows


def _message(i: int) -> dict[str, Any]:
    return {"role": "user" if i % 2 else "assistant", "content": f"message {i} " + "x" * 50}


def _turns(n: int) -> list[dict[str, Any]]:
    """An agent's records as ``list()`` gives them: each intent calls the model with the whole
    conversation and sets it in a delta; each outcome repeats its intent's effect."""
    records: list[dict[str, Any]] = []
    for turn in range(1, n + 1):
        conversation = [_message(i) for i in range(turn + MIN_ITEMS)]  # fresh objects every turn
        effect = {"type": "llm_call", "payload": {"messages": conversation}, "result_key": "reply"}
        records.append({"seq": 2 * turn, "kind": "effect", "status": "started", "effect_id": turn,
                        "effect": effect, "delta": {"vars": [["s", ["messages"], list(conversation)]]}})
        records.append({"seq": 2 * turn + 1, "kind": "effect", "status": "completed", "effect_id": turn,
                        "effect": copy.deepcopy(effect), "result": _message(turn + MIN_ITEMS)})
    return records


def test_a_growing_conversation_is_shown_once() -> None:
    records = _turns(30)
    before = copy.deepcopy(records)
    short = abbreviate(records)
    assert records == before  # the records given are not changed
    first = short[0]["effect"]["payload"]["messages"]
    assert first == records[0]["effect"]["payload"]["messages"]  # shown whole the first time
    # The same record's delta sets the list its effect just showed.
    assert short[0]["delta"]["vars"][0][2] == [placeholder(MIN_ITEMS + 1, 2)]
    for turn in range(2, 31):
        intent = short[2 * turn - 2]
        assert intent["effect"]["payload"]["messages"] == [placeholder(turn + MIN_ITEMS - 1, 2 * turn - 2),
                                                          _message(turn + MIN_ITEMS - 1)]
        assert items_in(intent["effect"]["payload"]["messages"]) == turn + MIN_ITEMS
        # The outcome's effect is its intent's, abbreviated the same way.
        assert short[2 * turn - 1]["effect"] is intent["effect"]
        assert short[2 * turn - 1]["result"] is records[2 * turn - 1]["result"]
    full = len(json.dumps(records))
    assert len(json.dumps(short)) < full / 5
    rows, stats = build_rows(short)
    assert stats["llm_calls"] == 30
    assert rows[-2]["sum"].startswith(f"LLM call, {30 + MIN_ITEMS} message(s): message {30 + MIN_ITEMS - 1}")
    assert rows[-1]["eff_ref"] == rows[-2]["seq"] and "eff" not in rows[-1]


def test_short_lists_other_lists_and_changed_prefixes_are_shown_whole() -> None:
    short_list = list(range(MIN_ITEMS - 1))
    long_list = [f"item {i}" for i in range(MIN_ITEMS + 2)]
    edited = list(long_list)
    edited[0] = "item 0, edited"  # not an extension: an earlier item changed
    records = [
        {"seq": 1, "kind": "node", "result": {"a": short_list, "b": long_list}},
        {"seq": 2, "kind": "node", "result": {"a": list(short_list) + [99], "b": edited + ["new"]}},
        {"seq": 3, "kind": "node", "result": {"c": [f"other {i}" for i in range(MIN_ITEMS)]}},
        {"seq": 4, "kind": "node", "result": {"b": long_list + ["more"]},
         "record_hash": "ab" * 32, "prev_hash": "cd" * 32},
    ]
    short = abbreviate(records)
    assert short[:3] == records[:3]
    assert short[1] is records[1] and short[2] is records[2]  # nothing to abbreviate: the record itself
    assert short[3]["result"]["b"] == [placeholder(len(long_list), 1), "more"]
    assert short[3]["record_hash"] == "ab" * 32


def test_a_list_equal_to_one_shown_and_nested_lists() -> None:
    inner = [{"n": i} for i in range(MIN_ITEMS)]
    records = [
        {"seq": 1, "kind": "node", "result": {"rows": [{"cells": inner}]}},
        {"seq": 2, "kind": "node", "result": {"rows": [{"cells": inner + [{"n": 99}]}]}},
        {"seq": 3, "kind": "node", "result": {"again": copy.deepcopy(inner)}},
    ]
    short = abbreviate(records)
    assert short[1]["result"]["rows"][0]["cells"] == [placeholder(MIN_ITEMS, 1), {"n": 99}]
    assert short[2]["result"]["again"] == [placeholder(MIN_ITEMS, 1)]
    assert items_in(short[2]["result"]["again"]) == MIN_ITEMS


def test_a_tool_call_in_the_models_shape_is_summarised_by_its_function() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}}
    records = [{"seq": 1, "kind": "effect", "status": "started", "effect_id": 1,
                "effect": {"type": "tool_calls", "payload": {"tool_calls": [call]}}},
               {"seq": 2, "kind": "effect", "status": "started", "effect_id": 2,
                "effect": {"type": "tool_calls", "payload": {"tool_calls": [{"name": "add", "arguments": {"a": 1}}]}}}]
    rows, _ = build_rows(records)
    assert rows[0]["sum"] == 'tool calls: search({"q": "x"})'
    assert rows[1]["sum"] == 'tool calls: add({"a": 1})'
