"""Tool executors, tool-call normalisation, approval payloads and message helpers."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from abstractruntime.core.errors import InvalidInputError, VerificationFailedError
from abstractruntime.core.models import WaitReason, WaitState
from abstractruntime.integrations.abstractcore import (
    AbstractCoreToolExecutor,
    LocalToolExecutor,
    PassthroughToolExecutor,
    approve_tool_calls,
    assistant_message,
    deny_tool_calls,
    describe_tool,
    is_tool_approval_wait,
    pending_tool_calls,
    tool_result_messages,
)
from abstractruntime.integrations.abstractcore._support import canonical_sha256, normalize_tool_calls
from integration_support import requires_abstractcore

CALLED: list[str] = []


def add(a: int, b: int) -> int:
    """Add two integers.

    Longer explanation that is not part of the description.
    """
    CALLED.append("add")
    return a + b


def greet(name: str, punctuation: Optional[str] = "!") -> str:
    """Greet someone."""
    return f"Hello, {name}{punctuation}"


def explode() -> None:
    """Always fails."""
    raise ValueError("boom")


def calls(*items: tuple[str, Any, Optional[str]]) -> list[dict[str, Any]]:
    return [{"name": n, "arguments": a, "call_id": c} for n, a, c in items]


EXECUTORS = [pytest.param(LocalToolExecutor, id="local"),
             pytest.param(AbstractCoreToolExecutor, id="abstractcore", marks=[pytest.mark.abstractcore,
                                                                            requires_abstractcore])]


@pytest.mark.parametrize("make", EXECUTORS)
def test_executes_registered_tools_in_order(make: Any) -> None:
    out = make([add, greet]).execute(tool_calls=calls(("add", {"a": 2, "b": 3}, "c1"),
                                                      ("greet", {"name": "Ada"}, "c2")))
    assert out["mode"] == "executed"
    assert [(r["call_id"], r["name"], r["success"], r["output"], r["error"]) for r in out["results"]] == [
        ("c1", "add", True, 5, None),
        ("c2", "greet", True, "Hello, Ada!", None),
    ]


@pytest.mark.parametrize("make", EXECUTORS)
def test_unknown_tool_bad_arguments_and_raising_tool_fail_per_call(make: Any) -> None:
    CALLED.clear()
    out = make([add, explode]).execute(tool_calls=calls(
        ("rm_rf", {"path": "/"}, "c1"),          # not registered: never runs
        ("add", {"a": 1}, "c2"),                 # missing argument
        ("add", "not json {", "c3"),             # arguments that are not an object
        ("explode", {}, "c4"),                   # raises
        ("add", {"a": 1, "b": 1}, "c5"),         # still runs after the failures
    ))
    results = {r["call_id"]: r for r in out["results"]}
    assert [r["success"] for r in out["results"]] == [False, False, False, False, True]
    assert "rm_rf" in results["c1"]["error"]
    assert "add" in results["c2"]["error"]
    assert "add" in results["c3"]["error"]
    assert "boom" in results["c4"]["error"]
    assert results["c5"]["output"] == 2
    assert CALLED == ["add"]  # only the valid call reached the function


def test_local_executor_accepts_a_name_map_and_refuses_ambiguity() -> None:
    executor = LocalToolExecutor({"sum": add})
    assert executor.tool_names == ["sum"]
    assert executor.execute(tool_calls=calls(("sum", {"a": 1, "b": 2}, "x")))["results"][0]["output"] == 3
    with pytest.raises(InvalidInputError, match="two tools"):
        LocalToolExecutor([add, add])
    with pytest.raises(InvalidInputError, match="not callable"):
        LocalToolExecutor({"x": 3})  # type: ignore[dict-item]


def test_outputs_are_json_safe() -> None:
    def odd() -> Any:
        return {"t": (1, 2), "s": {3}, "f": float("nan"), 4: b"bytes"}

    (result,) = LocalToolExecutor([odd]).execute(tool_calls=calls(("odd", {}, "c")))["results"]
    assert result["output"] == {"t": [1, 2], "s": [3], "f": "nan", "4": "bytes"}


def test_describe_tool_builds_a_json_schema() -> None:
    assert describe_tool("greet", greet) == {
        "name": "greet",
        "description": "Greet someone.",
        "parameters": {"type": "object",
                       "properties": {"name": {"type": "string"}, "punctuation": {"type": "string"}},
                       "required": ["name"]},
    }
    assert describe_tool("add", add)["description"] == "Add two integers."


@requires_abstractcore
@pytest.mark.abstractcore
def test_abstractcore_executor_coerces_llm_argument_types_and_describes_tools() -> None:
    executor = AbstractCoreToolExecutor([add])
    (result,) = executor.execute(tool_calls=calls(("add", {"a": "2", "b": "40"}, "c")))["results"]
    assert (result["success"], result["output"]) == (True, 42)
    (spec,) = executor.tool_specs()
    assert spec["name"] == "add"
    assert spec["parameters"]["required"] == ["a", "b"]
    assert spec["parameters"]["properties"]["a"]["type"] == "integer"


@requires_abstractcore
@pytest.mark.abstractcore
def test_abstractcore_executor_without_tools_uses_the_global_registry() -> None:
    import warnings

    from abstractcore.tools.registry import get_registry, register_tool

    def shout_for_test(text: str) -> str:
        """Upper-case text."""
        return text.upper()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # AbstractCore deprecates global registration
        register_tool(shout_for_test)
    try:
        out = AbstractCoreToolExecutor().execute(tool_calls=calls(("shout_for_test", {"text": "hi"}, "c1")))
        assert out == {"mode": "executed", "results": [
            {"call_id": "c1", "name": "shout_for_test", "success": True, "output": "HI", "error": None}]}
        # a private registry does not see globally registered tools
        private = AbstractCoreToolExecutor([add]).execute(tool_calls=calls(("shout_for_test", {"text": "x"}, "c")))
        assert private["results"][0]["success"] is False
    finally:
        get_registry().unregister("shout_for_test")


def test_passthrough_returns_normalised_calls_with_stable_ids() -> None:
    raw = [
        {"id": "call_x", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}},
        {"name": "greet", "arguments": {"name": "Bo"}},  # no id: prompted tool calling
    ]
    out = PassthroughToolExecutor().execute(tool_calls=raw)
    again = PassthroughToolExecutor().execute(tool_calls=raw)
    assert out["mode"] == "passthrough"
    assert out["tool_calls"][0] == {"name": "add", "arguments": {"a": 1, "b": 2}, "call_id": "call_x"}
    assert out["tool_calls"][1]["name"] == "greet" and out["tool_calls"][1]["call_id"]
    assert out == again
    with pytest.raises(InvalidInputError):
        PassthroughToolExecutor(mode="executed")


def test_normalisation_rejects_non_lists() -> None:
    with pytest.raises(InvalidInputError):
        normalize_tool_calls({"name": "add"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        normalize_tool_calls([42])


# ----------------------------------------------------------------------------- approval
def passthrough_wait(tool_calls: list[dict[str, Any]]) -> WaitState:
    pending = normalize_tool_calls(tool_calls)
    return WaitState(reason=WaitReason.EVENT, wait_key="tools:r:x", resume_to_node="next", result_key="tools",
                     details={"mode": "passthrough", "tool_calls": pending, "calls_sha256": canonical_sha256(pending)})


def test_approve_runs_the_pending_calls() -> None:
    wait = passthrough_wait(calls(("add", {"a": 4, "b": 5}, "c1"), ("greet", {"name": "Cy"}, "c2")))
    assert is_tool_approval_wait(wait) and is_tool_approval_wait(wait.to_dict())
    payload = approve_tool_calls(wait, LocalToolExecutor([add, greet]))
    assert payload["mode"] == "executed"
    assert [r["output"] for r in payload["results"]] == [9, "Hello, Cy!"]


def test_approve_a_subset_refuses_the_rest() -> None:
    CALLED.clear()
    wait = passthrough_wait(calls(("add", {"a": 1, "b": 1}, "c1"), ("add", {"a": 2, "b": 2}, "c2")))
    payload = approve_tool_calls(wait, LocalToolExecutor([add]), only=["c2"], reason="too risky")
    assert [r["success"] for r in payload["results"]] == [False, True]
    assert payload["results"][0]["error"] == "Tool call refused: too risky"
    assert CALLED == ["add"]


def test_deny_refuses_everything() -> None:
    wait = passthrough_wait(calls(("add", {"a": 1, "b": 1}, "c1")))
    payload = deny_tool_calls(wait, reason="policy")
    assert payload == {"mode": "executed", "results": [
        {"call_id": "c1", "name": "add", "success": False, "output": None, "error": "Tool call refused: policy"}]}


def test_tampered_pending_calls_are_refused() -> None:
    wait = passthrough_wait(calls(("add", {"a": 1, "b": 1}, "c1")))
    assert wait.details is not None
    wait.details["tool_calls"][0]["name"] = "explode"
    with pytest.raises(VerificationFailedError):
        pending_tool_calls(wait)
    with pytest.raises(InvalidInputError, match="not waiting for tool-call approval"):
        pending_tool_calls(WaitState(reason=WaitReason.USER, wait_key="k", prompt="?"))


# ----------------------------------------------------------------------------- messages
def test_round_trip_messages() -> None:
    llm_result = {"content": None, "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}, "call_id": "c1"}]}
    assert assistant_message(llm_result) == {"role": "assistant", "content": "",
                                             "tool_calls": llm_result["tool_calls"]}
    executed = {"mode": "executed", "results": [
        {"call_id": "c1", "name": "add", "success": True, "output": {"sum": 3}, "error": None},
        {"call_id": "c2", "name": "rm", "success": False, "output": None, "error": "not allowed"},
    ]}
    assert tool_result_messages(executed) == [
        {"role": "tool", "tool_call_id": "c1", "content": '{"sum": 3}', "name": "add"},
        {"role": "tool", "tool_call_id": "c2", "content": "Error: not allowed", "name": "rm"},
    ]
    with pytest.raises(InvalidInputError):
        tool_result_messages({"mode": "passthrough", "tool_calls": []})
