"""Property: whatever a workflow does to its variables, the ledger replays to exactly its live state.

Random edit sequences — values set, deleted, mutated in place, lists growing by appends and
shrinking, booleans replaced by 0/1 and back, nested objects, one object reachable from two
variables, large values (stored once, referred to, extended by their tail) and effect results
stored into variables — run on a file store, in ticks of random length, alternately in the
same runtime (its writer and delta tracker carried from one tick to the next) and in a new one
(the run opened from its files). After every tick the live state equals a model of the same
edits, and a fresh store rebuilds the same state from the files; at the end the state replays
from the ledger alone (checkpoint deleted), ``state_at`` of the last record agrees, and the
ledger verifies. States are compared as canonical JSON: ``True`` is not ``1``, ``1.0`` is ``1``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.jcs import jcs
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.redaction import NoRedaction
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.session import set_nested
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

EXAMPLES = int(os.environ.get("REPLAY_EXACT_EXAMPLES", "80"))

NAMES = ("a", "b", "m", "password")
KEYS = st.sampled_from(["a", "b", "k", "m", "$v", "password", "role"])
LONG = st.integers(0, 9).map(lambda i: f"long {i} " + "w" * 300)  # a value stored once, referred to after
SCALARS = (st.none() | st.booleans() | st.sampled_from([0, 1, -1, 2, 0.0, 1.0, -0.0, 0.5, 1e21, 2**53 - 1])
           | st.text(alphabet="xyz01 ", max_size=4) | LONG)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=3),
                      max_leaves=10)
PATHS = st.lists(st.sampled_from(NAMES), min_size=1, max_size=2)

EDITS = st.one_of(
    st.tuples(st.just("set"), PATHS, VALUES),
    st.tuples(st.just("del"), PATHS),
    st.tuples(st.just("append"), PATHS, VALUES),
    st.tuples(st.just("extend"), PATHS, st.lists(VALUES, max_size=3)),
    st.tuples(st.just("pop"), PATHS),
    st.tuples(st.just("item"), PATHS, st.integers(0, 3), VALUES),  # replace a list item in place
    st.tuples(st.just("flip"), PATHS),  # True <-> 1, False <-> 0 at the end of a list
    st.tuples(st.just("alias"), PATHS, PATHS),  # one object at two places (within a tick)
    st.tuples(st.just("copy"), PATHS, PATHS),
    st.tuples(st.just("clear"), PATHS),
)
# One step: its edits, and (sometimes) an llm_call whose result goes to a variable, the handler
# possibly appending to the list it was given.
STEPS = st.tuples(st.lists(EDITS, max_size=4),
                  st.none() | st.tuples(st.sampled_from(["r", "m", "a.k"]), VALUES, st.none() | VALUES))
PLANS = st.tuples(st.lists(STEPS, min_size=1, max_size=10),
                  st.lists(st.tuples(st.integers(1, 3), st.booleans()), min_size=1, max_size=12),
                  st.booleans())  # True: no redaction (the records then hold the values as given)


def _parent(root: dict[str, Any], path: list[str], create: bool) -> Any:
    target: Any = root
    for part in path[:-1]:
        nxt = target.get(part) if isinstance(target, dict) else None
        if not isinstance(nxt, dict):
            if not create or not isinstance(target, dict):
                return None
            nxt = target[part] = {}
        target = nxt
    return target if isinstance(target, dict) else None


def _get(root: dict[str, Any], path: list[str]) -> Any:
    parent = _parent(root, path, False)
    return parent.get(path[-1]) if parent is not None else None


def _reaches(source: Any, target: Any) -> bool:
    """True when ``target`` is ``source`` or inside it (by identity)."""
    stack = [source]
    while stack:
        item = stack.pop()
        if item is target:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def apply_edit(root: dict[str, Any], edit: tuple[Any, ...]) -> None:
    """Apply one edit to ``root`` in place (an edit that does not fit the value there does nothing)."""
    kind, path = edit[0], list(edit[1])
    if kind == "set":
        _parent(root, path, True)[path[-1]] = copy.deepcopy(edit[2])
    elif kind == "del":
        parent = _parent(root, path, False)
        if parent is not None:
            parent.pop(path[-1], None)
    elif kind == "clear":
        value = _get(root, path)
        if isinstance(value, (list, dict)):
            value.clear()
    elif kind == "copy" or kind == "alias":
        source = _get(root, path)
        target = list(edit[2])
        if source is not None and target[:len(path)] != path and path[:len(target)] != target:
            parent = _parent(root, target, True)
            if kind == "copy":
                parent[target[-1]] = copy.deepcopy(source)
            elif not _reaches(source, parent):  # never a container that contains itself
                parent[target[-1]] = source
    else:
        value = _get(root, path)
        if not isinstance(value, list):
            if kind in ("append", "extend"):
                value = _parent(root, path, True)[path[-1]] = []
            else:
                return
        if kind == "append":
            value.append(copy.deepcopy(edit[2]))
        elif kind == "extend":
            value.extend(copy.deepcopy(edit[2]))
        elif kind == "pop" and value:
            value.pop()
        elif kind == "item" and value:
            value[edit[2] % len(value)] = copy.deepcopy(edit[3])
        elif kind == "flip" and value:
            last = value[-1]
            flipped = {True: 1, False: 0}.get(last, last) if isinstance(last, bool) else \
                (last == 1) if type(last) in (int, float) and last in (0, 1) else last
            value[-1] = flipped


def canonical(value: Any) -> bytes:
    return jcs(value)


class Loop:
    """The workflow of one plan, and a model of what its variables must be."""

    def __init__(self, steps: list[Any]) -> None:
        self.steps = steps
        self.index = 0
        self.model: dict[str, Any] = {}

    def workflow(self) -> WorkflowSpec:
        def step(run: Any, ctx: Any) -> StepPlan:
            if self.index >= len(self.steps):
                return StepPlan("step", complete_output={"steps": self.index})
            edits, call = self.steps[self.index]
            self.index += 1
            for edit in edits:
                apply_edit(run.vars, edit)
                apply_edit(self.model, edit)
            if call is None:
                return StepPlan("step", next_node="step")
            payload = {"m": run.vars.get("m"), "a": run.vars.get("a")}
            return StepPlan("step", effect=Effect(EffectType.LLM_CALL, payload, result_key=call[0]), next_node="step")

        return WorkflowSpec("replay_exact", "step", {"step": step})

    def handler(self, run: Any, effect: Any) -> EffectOutcome:
        _, call = self.steps[self.index - 1]
        key, result, extra = call
        messages = effect.payload.get("m")
        if extra is not None and isinstance(messages, list):
            messages.append(copy.deepcopy(extra))  # a handler changing what it was given, in place
            if isinstance(self.model.get("m"), list):
                self.model["m"].append(copy.deepcopy(extra))
        value = {"v": copy.deepcopy(result)}
        set_nested(self.model, key, copy.deepcopy(value))
        return EffectOutcome.completed(value)

    def tick_boundary(self) -> None:
        # A tick hands the next one a copy of the state: objects no longer shared between variables.
        self.model = json.loads(canonical(self.model))


def _fresh_vars(root: Path, run_id: str) -> bytes:
    store = FileStore(root, durability="none")
    try:
        return canonical(store.runtime().get_state(run_id).vars)
    finally:
        store.close()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PLANS)
def test_random_edits_replay_to_exactly_the_live_state(plan: tuple[list[Any], list[tuple[int, bool]], bool]) -> None:
    steps, ticks, bare = plan
    loop = Loop(steps)
    wf = loop.workflow()
    work = Path(tempfile.mkdtemp(prefix="replay-exact-"))
    root = work / "store"
    options: dict[str, Any] = {"effect_handlers": {EffectType.LLM_CALL: loop.handler}}
    if bare:
        options["redactor"] = NoRedaction()
    stores: list[FileStore] = []
    try:
        store = FileStore(root, durability="none")
        stores.append(store)
        rt = store.runtime(**options)
        run_id = rt.start(workflow=wf, vars={})
        state = rt.get_state(run_id)
        for turn in range(len(steps) * 2 + 2):
            max_steps, reopen = ticks[turn % len(ticks)]
            if reopen:  # a new runtime: the run is opened from its files
                store = FileStore(root, durability="none")
                stores.append(store)
                rt = store.runtime(**options)
            state = rt.tick(workflow=wf, run_id=run_id, max_steps=max_steps)
            live = canonical(state.vars)
            assert live == canonical(loop.model), f"tick {turn}: the live state is not the model's"
            loop.tick_boundary()
            if state.status.value != "running":
                break
            assert _fresh_vars(root, run_id) == live, f"tick {turn}: the files rebuild another state"
        assert state.status.value == "completed", state.status
        # A finished run's secret values are dropped: from now on every reader shows them redacted.
        final = _fresh_vars(root, run_id)
        for store in stores:
            store.close()
        stores.clear()
        run_dir = root / "runs" / run_id
        (run_dir / "run.json").unlink()
        (run_dir / "anchors.jsonl").unlink(missing_ok=True)
        assert _fresh_vars(root, run_id) == final, "the ledger alone replays to another state"
        store = FileStore(root, durability="none")
        stores.append(store)
        rt = store.runtime()
        head = rt.get_ledger(run_id)[-1]["seq"]
        assert canonical(rt.state_at(run_id, head).run.vars) == final
        report = verify_run(store, run_id)
        assert report.ok, report
    finally:
        for store in stores:
            store.close()
        shutil.rmtree(work, ignore_errors=True)
