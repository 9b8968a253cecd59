"""The ``vars`` operations of a delta are exactly those docs/file-format.md lists, and replay
refuses any other: a list that grew by appending is written as a set of a stored value that
extends the list stored before (``$ext``), never as an operation the page does not specify.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.errors import CorruptRecordError
from abstractruntime.core.models import StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.core.wal import decode_op
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run
from prov_helpers import ledger_path, problem_types, read_records, rechain, write_records

PAGE = Path(__file__).resolve().parents[2] / "docs" / "file-format.md"
ITEM = "entry " + "z" * 300  # above the stored-value threshold on its own


def documented_ops() -> dict[str, list[str]]:
    """Each operation the page's table lists: its letter and the example forms of its rows."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("### `delta`: the state change", 1)[1].split("### ", 1)[0]
    rows = re.findall(r"^\s*\| `(\[\"(\w)\"[^`]*\])`(?:, `(\[[^`]*\])`)? \|", section, re.M)
    ops: dict[str, list[str]] = {}
    for first, letter, second in rows:
        ops.setdefault(letter, []).extend(form for form in (first, second) if form)
    return ops


def example(form: str) -> list[Any]:
    """A concrete operation of a documented form (``path``, ``subpath``, ``value``, ``items`` filled in)."""
    filled = (form.replace("subpath", '["x"]').replace("path", '["m"]').replace("value", "1")
              .replace("items", "[1]"))
    return json.loads(filled)


def test_the_page_lists_exactly_the_operations_replay_implements() -> None:
    ops = documented_ops()
    assert sorted(ops) == ["d", "r", "s"], ops
    for forms in ops.values():
        for form in forms:
            decode_op(example(form))  # every documented form replays
    for undocumented in (["a", ["m"], [1]], ["x", ["m"]], ["s", ["m"]], ["d", ["m"], 1], ["r", ["m"], "x"]):
        with pytest.raises(ValueError):
            decode_op(undocumented)


def appender() -> WorkflowSpec:
    def grow(run: Any, ctx: Any) -> StepPlan:
        run.vars.setdefault("log", []).append(f"{len(run.vars['log'])} {ITEM}")
        if len(run.vars["log"]) >= 6:
            return StepPlan("grow", complete_output={"n": len(run.vars["log"])})
        return StepPlan("grow", next_node="grow")

    return WorkflowSpec("appender", "grow", {"grow": grow})


def run_appender(store: FileStore) -> Any:
    rt, wf = store.runtime(), appender()
    run_id = rt.start(workflow=wf, vars={})
    return rt.tick(workflow=wf, run_id=run_id, max_steps=20)


def test_an_appended_list_is_a_set_of_its_extension(tmp_path: Path) -> None:
    store = FileStore(tmp_path, durability="none")
    try:
        state = run_appender(store)
        assert state.vars["log"][-1].startswith("5 ")
        run_id = state.run_id
    finally:
        store.close()
    records = read_records(ledger_path(tmp_path, run_id))
    ops = [op for r in records for op in (r.get("delta") or {}).get("vars", [])]
    assert {op[0] for op in ops} <= {"s", "d", "r"}
    extensions = [op[2] for op in ops if op[0] == "s" and isinstance(op[2], dict) and "$ext" in op[2]]
    # After the first stored list, each step writes its one new item, never the list again.
    assert len(extensions) >= 4 and all(len(ext["$items"]) == 1 for ext in extensions), ops
    assert all(len(json.dumps(r)) < 2 * len(ITEM) + 700 for r in records[2:]), [len(json.dumps(r)) for r in records]


def test_an_undocumented_append_operation_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path, durability="none")
    try:
        run_id = run_appender(store).run_id
    finally:
        store.close()
    (tmp_path / "runs" / run_id / "run.json").unlink()
    (tmp_path / "runs" / run_id / "anchors.jsonl").unlink(missing_ok=True)
    records = read_records(ledger_path(tmp_path, run_id))
    # A forger (or a writer of another format) turns the last extension into an "a" operation
    # and rechains the ledger: the chain holds, the record does not replay.
    for record in reversed(records):
        ops = (record.get("delta") or {}).get("vars", [])
        ext = next((op for op in ops if op[0] == "s" and isinstance(op[2], dict) and "$ext" in op[2]), None)
        if ext is not None:
            ops[ops.index(ext)] = ["a", ext[1], ext[2]["$items"]]
            record.pop("state", None)
            break
    else:
        pytest.fail("no extension to rewrite")
    write_records(ledger_path(tmp_path, run_id), rechain_without_replay(records))
    store = FileStore(tmp_path, durability="none")
    try:
        assert "unreplayable" in problem_types(verify_run(store, run_id))
        with pytest.raises(CorruptRecordError, match="cannot be replayed"):
            store.runtime().get_state(run_id)
    finally:
        store.close()


def rechain_without_replay(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consistent seq / prev_hash / record_hash (the forged record cannot be replayed, so its
    state digests are not recomputed: none follows it)."""
    try:
        return rechain(records)
    except ValueError:
        pass
    from prov_helpers import rehash

    return rehash(records)


def _forge(tmp_path: Path, change: Any) -> set[str]:
    """Run the appender, let ``change(records)`` edit its records, rechain them; verify's problems."""
    store = FileStore(tmp_path, durability="none")
    try:
        run_id = run_appender(store).run_id
    finally:
        store.close()
    records = read_records(ledger_path(tmp_path, run_id))
    change(records)
    for record in records:
        record.pop("state", None)
    write_records(ledger_path(tmp_path, run_id), rechain_without_replay(records))
    (tmp_path / "runs" / run_id / "run.json").unlink()
    store = FileStore(tmp_path, durability="none")
    try:
        return problem_types(verify_run(store, run_id))
    finally:
        store.close()


def _extensions(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [op[2] for r in records for op in (r.get("delta") or {}).get("vars", [])
            if op[0] == "s" and isinstance(op[2], dict) and "$ext" in op[2]]


def test_an_agent_like_run_verifies(tmp_path: Path) -> None:
    assert _forge(tmp_path, lambda records: None) == set()


def test_a_reference_to_a_value_never_defined_is_reported(tmp_path: Path) -> None:
    def change(records: list[dict[str, Any]]) -> None:
        # Deep inside a definition: the new item of the last extension.
        _extensions(records)[-1]["$items"] = [{"$v": "ab" * 32}]

    assert "value_undefined" in _forge(tmp_path, change)


def test_an_extension_of_a_value_that_is_not_a_list_is_reported(tmp_path: Path) -> None:
    from abstractruntime.core.values import value_id

    def change(records: list[dict[str, Any]]) -> None:
        exts = _extensions(records)
        item = exts[0]["$items"][0]  # a log entry, stored as a value of its own: a string
        assert "$val" in item and isinstance(item["$val"], str)
        exts[-1]["$ext"] = value_id(item["$val"])

    assert "value_not_a_list" in _forge(tmp_path, change)
