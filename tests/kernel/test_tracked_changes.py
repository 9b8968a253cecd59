"""A change anywhere in a run's variables is recorded, however the comparison is sped up.

The delta of a record may skip comparing a container its writer knows to be unchanged
(docs/file-format.md, "How a writer finds the state change"). These tests change the variables
of an agent loop *after* its conversation has been recorded many times — deep inside an old
message, a middle item replaced, a key removed, the list reordered in place by ``heapq``, an
object reachable from two variables, a plain object put inside a recorded one and changed on a
later step, a change made by the effect handler — and check that the ledger replays to exactly
the live state: the state rebuilt from the files, from the ledger alone, and ``state_at`` of the
record after the change. A shortcut that trusts a container it should not fails here.
"""

from __future__ import annotations

import copy
import heapq
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.jcs import jcs
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

Change = Callable[[dict[str, Any]], None]


def _reply(n: int) -> dict[str, Any]:
    return {"role": "assistant", "content": f"reply {n} " + "r" * 40,
            "tool_calls": [{"id": f"call_{n}", "function": {"name": "search", "arguments": f'{{"q": {n}}}'}}]}


class Loop:
    """An agent loop of ``turns`` turns; ``changes[turn]`` runs in the node or the effect handler."""

    def __init__(self, turns: int, changes: dict[int, tuple[str, Change]]) -> None:
        self.turns = turns
        self.changes = changes
        self.marks: list[int] = []  # turns whose change ran

    def workflow(self) -> WorkflowSpec:
        def agent(run: Any, ctx: Any) -> StepPlan:
            messages = run.vars["messages"]
            if "reply" in run.vars:
                messages.append(run.vars["reply"])
            turn = run.vars["turn"] = run.vars.get("turn", 0) + 1
            where, change = self.changes.get(turn, ("", None))
            if change is not None and where == "node":
                change(run.vars)
                self.marks.append(turn)
            if turn > self.turns:
                return StepPlan("agent", complete_output={"turns": turn})
            return StepPlan("agent", effect=Effect(EffectType.LLM_CALL, {"messages": messages}, result_key="reply"),
                            next_node="agent")

        return WorkflowSpec("tracked_changes", "agent", {"agent": agent})

    def model(self, run: Any, effect: Any) -> EffectOutcome:
        turn = run.vars["turn"]
        where, change = self.changes.get(turn, ("", None))
        if change is not None and where == "handler":
            change(run.vars)  # an effect handler receives the live run and may change it
            self.marks.append(turn)
        return EffectOutcome.completed(_reply(turn))


def _vars(root: Path, run_id: str, *, ledger_only: bool = False) -> bytes:
    if ledger_only:
        run_dir = root / "runs" / run_id
        (run_dir / "run.json").unlink(missing_ok=True)
        (run_dir / "anchors.jsonl").unlink(missing_ok=True)
    store = FileStore(root, durability="none")
    try:
        return jcs(store.runtime().get_state(run_id).vars)
    finally:
        store.close()


def run_loop(root: Path, loop: Loop, *, max_steps: int = 4, first: Optional[list[Any]] = None,
             finished: Callable[[bytes], bytes] = lambda live: live,
             each_tick: Callable[[], None] = lambda: None) -> tuple[str, bytes]:
    """Run ``loop`` to its end in ticks of ``max_steps`` nodes (a tick starts from a copy of the
    variables in containers that report their changes); returns the run id and the live
    variables' canonical JSON, after checking that the files, the ledger alone and every record's ``state_at`` agree with it.

    ``finished``: what readers see of the live state once the run ended (e.g. its secrets
    redacted); ``each_tick``: a check run after every tick."""
    store = FileStore(root, durability="none")
    try:
        wf = loop.workflow()
        rt = store.runtime(effect_handlers={EffectType.LLM_CALL: loop.model})
        run_id = rt.start(workflow=wf, vars={"messages": first if first is not None else [{"role": "user",
                                                                                            "content": "go"}]})
        while True:
            state = rt.tick(workflow=wf, run_id=run_id, max_steps=max_steps)
            live = jcs(state.vars)
            if state.status.value != "running":
                live = finished(live)
            each_tick()
            assert _vars(root, run_id) == live, "the files rebuild another state than the live one"
            if state.status.value != "running":
                break
        assert state.status.value == "completed", state.error
        head = rt.get_ledger(run_id)[-1]["seq"]
        assert jcs(rt.state_at(run_id, head).run.vars) == live
    finally:
        store.close()
    assert _vars(root, run_id, ledger_only=True) == live, "the ledger alone replays to another state"
    reader = FileStore(root, durability="none")
    try:
        assert verify_run(reader, run_id).ok
    finally:
        reader.close()
    return run_id, live


def _states(root: Path, run_id: str) -> list[bytes]:
    store = FileStore(root, durability="none")
    try:
        rt = store.runtime()
        return [jcs(rt.state_at(run_id, seq).run.vars) for seq in range(1, rt.get_ledger(run_id)[-1]["seq"] + 1)]
    finally:
        store.close()


def _content(i: int) -> Change:
    def change(v: dict[str, Any]) -> None:
        v["messages"][i]["content"] += " CHANGED"
    return change


def _deep(i: int) -> Change:
    def change(v: dict[str, Any]) -> None:
        v["messages"][i]["tool_calls"][0]["function"]["name"] = "CHANGED"
    return change


CHANGES: dict[str, Change] = {
    "an old message's content": _content(3),
    "deep inside an old message": _deep(4),
    "a middle item replaced": lambda v: v["messages"].__setitem__(5, {"role": "user", "content": "replaced"}),
    "a key removed from an old message": lambda v: v["messages"][4].pop("role", None),
    "del of a key": lambda v: v["messages"][5].__delitem__("content") if "content" in v["messages"][5] else None,
    "an item inserted at the front": lambda v: v["messages"].insert(0, {"role": "system", "content": "first"}),
    "an item removed from the middle": lambda v: v["messages"].pop(4),
    "the list reversed": lambda v: v["messages"].reverse(),
    "the list sorted": lambda v: v["messages"].sort(key=lambda m: m["content"]),
    "the list cleared and refilled": lambda v: (v["messages"].clear(), v["messages"].append({"content": "x"})),
    "an old message's dict updated": lambda v: v["messages"][2].update({"role": "user", "extra": [1, True]}),
    "setdefault adds a key": lambda v: v["messages"][2].setdefault("new", {"a": 1}),
    "a tool call list extended": lambda v: v["messages"][3]["tool_calls"].extend([{"id": "x"}]),
    "a tool call list += ": lambda v: v["messages"][3]["tool_calls"].__iadd__([{"id": "y"}]),
    "a tool call list *= 2": lambda v: v["messages"][3]["tool_calls"].__imul__(2),
    "a slice assigned": lambda v: v["messages"].__setitem__(slice(1, 3), [{"content": "one"}]),
    "a slice deleted": lambda v: v["messages"].__delitem__(slice(2, 4)),
    "the reply changed through its other name": lambda v: v["reply"].__setitem__("content", "CHANGED"),
    "a message popitem": lambda v: v["messages"][2].popitem(),
    "a message cleared": lambda v: v["messages"][2].clear(),
    "a message |= ": lambda v: v["messages"][2].__ior__({"role": "CHANGED"}),
    "an old message removed by value": lambda v: v["messages"].remove(v["messages"][2]),
    "True replaced by 1 deep inside": lambda v: v["messages"][1].__setitem__("flag", True),
    "the whole list replaced by an equal copy, then changed": lambda v: (
        v.__setitem__("messages", copy.deepcopy(v["messages"])), v["messages"][2].__setitem__("content", "C")),
    "heapq reorders a list in place (C code, no method called)": lambda v: (
        v.__setitem__("heap", [5, 1, 3, 2]) if "heap" not in v else heapq.heapify(v["heap"])),
    "heapq replaces an item in place": lambda v: (
        v.__setitem__("heap", [1, 5, 3]) if "heap" not in v else heapq.heapreplace(v["heap"], 4)),
}


@pytest.mark.parametrize("where", ["node", "handler"])
@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_change_after_many_records_is_recorded(tmp_path: Path, name: str, where: str) -> None:
    change = CHANGES[name]
    # The change runs twice, in two ticks (the heapq cases set up their list first), after some history.
    loop = Loop(14, {6: (where, change), 10: (where, change)})
    run_loop(tmp_path / "store", loop)
    assert loop.marks == [6, 10]


def test_a_change_undone_later_is_in_the_state_of_the_record_after_it(tmp_path: Path) -> None:
    def change(v: dict[str, Any]) -> None:
        v["messages"][3]["content"] = "TRANSIENT"

    def undo(v: dict[str, Any]) -> None:
        v["messages"][3]["content"] = "restored"

    root = tmp_path / "store"
    run_id, live = run_loop(root, Loop(12, {8: ("handler", change), 10: ("node", undo)}))
    assert b"TRANSIENT" not in live
    states = _states(root, run_id)
    assert any(b"TRANSIENT" in s for s in states), "the change was never recorded"


def test_a_plain_object_put_inside_a_recorded_one_is_watched_on_later_steps(tmp_path: Path) -> None:
    """A dict the workflow builds, put inside an old message, then changed in place steps later."""
    held: dict[str, Any] = {}

    def put(v: dict[str, Any]) -> None:
        inner = held["inner"] = {"notes": ["a"]}
        v["messages"][3]["meta"] = inner

    def later(v: dict[str, Any]) -> None:
        v["messages"][3]["meta"]["notes"].append("b")  # through the run's variables

    def again(v: dict[str, Any]) -> None:
        v["messages"][3]["meta"]["notes"][0] = "A"

    _, live = run_loop(tmp_path / "store", Loop(14, {6: ("node", put), 9: ("handler", later), 12: ("node", again)}))
    assert b'"notes":["A","b"]' in live


def test_an_object_moved_between_variables_is_watched_at_its_new_place(tmp_path: Path) -> None:
    def move(v: dict[str, Any]) -> None:
        v["kept"] = v["messages"][2]
        v["box"] = {"inside": v["messages"][4]}

    def change(v: dict[str, Any]) -> None:
        v["kept"]["content"] = "kept changed"
        v["messages"][4]["content"] = "changed through the list"

    # (A tick starts from a copy: objects shared at turn 6 are no longer shared at turn 9.)
    _, live = run_loop(tmp_path / "store", Loop(12, {6: ("node", move), 9: ("handler", change), 10: ("node", move),
                                                     11: ("node", change)}))
    assert b"changed through the list" in live and b"kept changed" in live


def test_an_object_changed_away_from_its_place_and_put_back_is_compared(tmp_path: Path) -> None:
    """Its place kept an equal copy meanwhile: what it was sealed against there is no longer its content."""
    def setup(v: dict[str, Any]) -> None:
        v["a"] = {"k": 1}
        v["lst"] = []

    def away(v: dict[str, Any]) -> None:
        obj = v["a"]
        v["lst"].append(obj)
        v["a"] = copy.deepcopy(obj)
        obj["x"] = "changed away"

    def back(v: dict[str, Any]) -> None:
        v["a"] = v["lst"][-1]

    _, live = run_loop(tmp_path / "store", Loop(10, {2: ("node", setup), 6: ("node", away), 7: ("node", back)}))
    assert live.count(b"changed away") == 2


def test_a_list_reordered_by_heapq_in_a_later_tick(tmp_path: Path) -> None:
    """``heapq`` writes into the list without calling its methods."""
    def setup(v: dict[str, Any]) -> None:
        v["heap"] = [5, 1, 3, 2]

    def heapify(v: dict[str, Any]) -> None:
        heapq.heapify(v["heap"])

    _, live = run_loop(tmp_path / "store", Loop(10, {2: ("node", setup), 6: ("handler", heapify)}))
    assert b'"heap":[1,2,3,5]' in live


@pytest.mark.parametrize("max_steps", [1, 3, 7, 1000])
def test_changes_across_tick_boundaries(tmp_path: Path, max_steps: int) -> None:
    changes = {4: ("node", _content(2)), 7: ("handler", _deep(3)), 9: ("node", CHANGES["a middle item replaced"])}
    run_loop(tmp_path / "store", Loop(12, changes), max_steps=max_steps)


OPS = st.sampled_from(["content", "deep", "replace", "pop_key", "insert", "pop", "reverse", "nest", "nest_change",
                       "alias", "heapify", "extend_inner", "swap"])


def _random_change(kind: str, seed: int) -> Change:
    def change(v: dict[str, Any]) -> None:
        rnd = random.Random(seed)
        messages = v["messages"]
        i = rnd.randrange(len(messages))
        m = messages[i]
        if kind == "content":
            m["content"] = f"changed {seed}"
        elif kind == "deep" and isinstance(m.get("tool_calls"), list) and m["tool_calls"]:
            m["tool_calls"][0]["function"]["arguments"] = f"{seed}"
        elif kind == "replace":
            messages[i] = {"role": "user", "content": f"replaced {seed}"}
        elif kind == "pop_key" and m:
            m.pop(next(iter(m)))
        elif kind == "insert":
            messages.insert(i, {"content": f"inserted {seed}"})
        elif kind == "pop" and len(messages) > 1:
            messages.pop(i)
        elif kind == "reverse":
            messages.reverse()
        elif kind == "nest":
            m["nested"] = {"list": [seed], "more": {"x": seed}}
        elif kind == "nest_change":
            for item in messages:
                if isinstance(item.get("nested"), dict):
                    item["nested"]["list"].append(seed)
                    item["nested"]["more"]["x"] = -seed
                    break
        elif kind == "alias":
            v["alias"] = m
        elif kind == "heapify":
            heapq.heapify(v.setdefault("heap", [9, 8, 7, 6]))
            if v["heap"]:
                heapq.heapreplace(v["heap"], seed % 10)
        elif kind == "extend_inner" and isinstance(v.get("alias"), dict):
            v["alias"].setdefault("more", []).extend([seed])
        elif kind == "swap" and len(messages) > 2:
            messages[0], messages[-1] = messages[-1], messages[0]
    return change


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(2, 13), st.sampled_from(["node", "handler"]), OPS), min_size=1, max_size=6),
       st.sampled_from([2, 5, 9, 1000]))
def test_random_changes_in_place_replay_exactly(tmp_path_factory: Any, plan: list[Any], max_steps: int) -> None:
    changes: dict[int, tuple[str, Change]] = {}
    for n, (turn, where, kind) in enumerate(plan):
        previous = changes.get(turn)
        new = _random_change(kind, n)
        if previous is not None and previous[0] == where:
            first = previous[1]
            changes[turn] = (where, lambda v, a=first, b=new: (a(v), b(v)))  # type: ignore[misc]
        else:
            changes[turn] = (where, new)
    root = tmp_path_factory.mktemp("tracked") / "store"
    try:
        run_loop(root, Loop(14, changes), max_steps=max_steps)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_containers_the_run_hands_out_copy_and_pickle_as_plain_json(tmp_path: Path) -> None:
    """Whatever the runtime uses to watch changes, a copy or a pickle of a variable is plain data."""
    import json
    import pickle

    seen: dict[str, Any] = {}

    def look(v: dict[str, Any]) -> None:
        messages = v["messages"]
        seen["deep"] = copy.deepcopy(messages)
        seen["shallow"] = copy.copy(messages[1])
        seen["pickled"] = pickle.loads(pickle.dumps(messages))
        seen["json"] = json.loads(json.dumps(messages))
        seen["equal"] = messages == seen["json"] and isinstance(messages, list) and isinstance(messages[1], dict)

    run_loop(tmp_path / "store", Loop(8, {6: ("node", look)}))
    assert seen["equal"]
    for name in ("deep", "pickled"):
        assert type(seen[name]) is list and all(type(m) is dict for m in seen[name]), name
        assert seen[name] == seen["json"]
    assert type(seen["shallow"]) is dict


def test_canonical_json_of_tracked_containers_is_that_of_plain_ones() -> None:
    """Nested subclasses of dict and list with numbers JCS writes its own way (``0.0``, ``1e21``)."""
    from abstractruntime.core.tracked import tracked_copy

    value = {"r": {"v": [0.0, [1e21, {"x": -0.0}]], "w": [[0.5], [2.0]]}, "s": [[1.0], [[3.0]]]}
    assert jcs(tracked_copy(value)) == jcs(value) == (b'{"r":{"v":[0,[1e+21,{"x":0}]],"w":[[0.5],[2]]},'
                                                      b'"s":[[1],[[3]]]}')


def test_an_append_costs_its_tail_and_an_unchanged_list_costs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracker compares no old item of a sealed list that only grew (a spy on the comparison
    records the size of what it compares), and still finds an old item changed in place."""
    from abstractruntime.core import wal
    from abstractruntime.core.tracked import tracked_copy
    from abstractruntime.core.wal import DeltaTracker, SetOp

    compared: list[int] = []
    real = wal.same_value

    def spy(private: Any, live: Any) -> bool:
        compared.append(len(live) if isinstance(live, (list, dict)) else 0)
        return real(private, live)

    monkeypatch.setattr(wal, "same_value", spy)
    plain = {"messages": [{"role": "user", "content": f"m{i}", "meta": {"n": [i]}} for i in range(1000)], "n": 1}
    tracker = DeltaTracker(plain)
    live = {key: tracked_copy(value) for key, value in plain.items()}
    tracker.adopt(plain, live)
    compared.clear()

    assert tracker.diff(live) == []
    live["messages"].append({"role": "assistant", "content": "new"})
    ops = tracker.diff(live)
    assert [(type(op), op.path, getattr(op, "extends", 0)) for op in ops] == [(SetOp, ["messages"], 1000)]
    assert max(compared, default=0) < 1000, compared
    tracker.commit(ops, None, live)

    live["messages"][500]["meta"]["n"].append("changed deep inside")
    ops = tracker.diff(live)
    assert [(type(op), op.path, getattr(op, "extends", 0)) for op in ops] == [(SetOp, ["messages"], 0)]
    tracker.commit(ops, None, live)
    assert tracker.private["messages"][500]["meta"]["n"] == [500, "changed deep inside"]
    compared.clear()
    assert tracker.diff(live) == []
    assert max(compared, default=0) < 1000, compared
