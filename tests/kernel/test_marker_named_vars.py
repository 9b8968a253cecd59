"""Variables whose names are marker keys (``$v``, ``$val``, ``$ext``, ``$items``, ``$secret``,
``$shown``, ``$lit``) are variables like any other (docs/file-format.md, "Markers and user data").

The variables' root holds names literally; only where the whole variables are one value in a
record (``["s", [], …]``) are they wrapped in ``$lit``. Random runs set such names at the root
and nested — by start vars, by handlers, by effect results at dotted keys — delete them and
replace values wholesale; after every tick the live state equals a model of the same edits and
the state reopened from the files, at the end the ledger alone replays to it, ``state_at``
agrees, the run verifies and the independent verifier (which shares no code with the package)
accepts the ledger. Snapshots, restore and fork carry such names; a run killed (``kill -9``)
mid-effect resumes with them.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.jcs import jcs
from abstractruntime.core.markers import MARKER_KEYS
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.redaction import NoRedaction
from abstractruntime.core.restore import fork_snapshot, restore_snapshot, take_snapshot
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "provenance"))
from independent_verifier import verify_lines as independent_verify  # noqa: E402

EXAMPLES = int(os.environ.get("MARKER_NAMES_EXAMPLES", "60"))
REPO = Path(__file__).resolve().parents[2]

NAMES = sorted(MARKER_KEYS) + ["a", "plain"]
NAME = st.sampled_from(NAMES)
LONG = st.integers(0, 3).map(lambda i: f"long {i} " + "w" * 300)  # stored once, referred to after
SCALARS = st.none() | st.booleans() | st.integers(-2, 2) | st.text(alphabet="$vx", max_size=3) | LONG
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAME, inner, max_size=3),
                      max_leaves=8)
PATHS = st.lists(NAME, min_size=1, max_size=3)
EDITS = st.one_of(
    st.tuples(st.just("set"), PATHS, VALUES),
    st.tuples(st.just("del"), PATHS),
    st.tuples(st.just("replace"), st.dictionaries(NAME, VALUES, max_size=4)),  # every variable at once
    st.tuples(st.just("result"), PATHS, VALUES.filter(lambda v: v is not None)),  # an effect's result at a dotted result_key
)
PLANS = st.tuples(st.dictionaries(NAME, VALUES, max_size=4),
                  st.lists(st.lists(EDITS, min_size=1, max_size=3), min_size=1, max_size=5),
                  st.lists(st.tuples(st.integers(1, 3), st.booleans()), min_size=1, max_size=4))


def canonical(value: Any) -> bytes:
    """JSON's view of a value (``True`` is not ``1``)."""
    return jcs(value)


def _set(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        nxt = target.get(part)
        if not isinstance(nxt, dict):
            nxt = target[part] = {}
        target = nxt
    target[path[-1]] = value


def _delete(target: dict[str, Any], path: list[str]) -> None:
    for part in path[:-1]:
        nxt = target.get(part)
        if not isinstance(nxt, dict):
            return
        target = nxt
    target.pop(path[-1], None)


class Plan:
    """A workflow of one node that applies the plan's edits step by step, and the model of them."""

    def __init__(self, start: dict[str, Any], steps: list[list[Any]]) -> None:
        self.steps = steps
        self.model: dict[str, Any] = copy.deepcopy(start)
        self.index = 0
        self.pending: Optional[tuple[list[str], Any]] = None

    def workflow(self) -> WorkflowSpec:
        def step(run: Any, ctx: Any) -> StepPlan:
            if self.index >= len(self.steps):
                return StepPlan("step", complete_output={"n": len(self.steps)})
            edits = self.steps[self.index]
            self.index += 1
            for edit in edits:
                if edit[0] == "set":
                    _set(run.vars, edit[1], copy.deepcopy(edit[2]))
                    _set(self.model, edit[1], copy.deepcopy(edit[2]))
                elif edit[0] == "del":
                    _delete(run.vars, edit[1])
                    _delete(self.model, edit[1])
                elif edit[0] == "replace":
                    run.vars.clear()
                    run.vars.update(copy.deepcopy(edit[1]))
                    self.model = copy.deepcopy(edit[1])
                else:
                    # The dotted key is the effect's; the result lands there when it completes.
                    self.pending = (edit[1], edit[2])
                    return StepPlan("step", effect=Effect(EffectType.TOOL_CALLS, {"n": self.index},
                                                          result_key=".".join(edit[1])), next_node="step")
            return StepPlan("step", next_node="step")

        return WorkflowSpec("marker_names", "step", {"step": step})

    def handler(self, run: Any, effect: Any) -> EffectOutcome:
        assert self.pending is not None
        path, value = self.pending
        self.pending = None
        _set(self.model, path, copy.deepcopy(value))
        return EffectOutcome.completed(copy.deepcopy(value))


def _fresh_vars(root: Path, run_id: str) -> bytes:
    store = FileStore(root, durability="none")
    try:
        return canonical(store.runtime().get_state(run_id).vars)
    finally:
        store.close()


def _independent_ok(root: Path, run_id: str) -> None:
    lines = (root / "runs" / run_id / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    ok, _, message = independent_verify(lines)
    assert ok, message


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PLANS)
def test_marker_named_variables_replay_to_exactly_the_live_state(plan: tuple[Any, Any, Any]) -> None:
    start, steps, ticks = plan
    loop = Plan(start, steps)
    wf = loop.workflow()
    work = Path(tempfile.mkdtemp(prefix="marker-names-"))
    root = work / "store"
    # (Without redaction: the default one redacts a variable named "$secret" by its name.)
    options: dict[str, Any] = {"effect_handlers": {EffectType.TOOL_CALLS: loop.handler}, "redactor": NoRedaction()}
    stores: list[FileStore] = []
    try:
        store = FileStore(root, durability="none")
        stores.append(store)
        rt = store.runtime(**options)
        run_id = rt.start(workflow=wf, vars=copy.deepcopy(start))
        assert canonical(rt.get_state(run_id).vars) == canonical(start)
        assert _fresh_vars(root, run_id) == canonical(start)
        state = rt.get_state(run_id)
        for turn in range(len(steps) * 3 + 2):
            max_steps, reopen = ticks[turn % len(ticks)]
            if reopen:  # a new runtime: the run is opened from its files
                store = FileStore(root, durability="none")
                stores.append(store)
                rt = store.runtime(**options)
            state = rt.tick(workflow=wf, run_id=run_id, max_steps=max_steps)
            live = canonical(state.vars)
            assert live == canonical(loop.model), f"tick {turn}: the live state is not the model's"
            assert _fresh_vars(root, run_id) == live, f"tick {turn}: the files rebuild another state"
            if state.status.value != "running":
                break
        assert state.status.value == "completed", state.status
        final = canonical(loop.model)
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
        _independent_ok(root, run_id)
    finally:
        for store in stores:
            store.close()
        shutil.rmtree(work, ignore_errors=True)


ALL_NAMES = {name: {"x": 1, name: [name]} for name in sorted(MARKER_KEYS)}


def _node(run: Any, ctx: Any) -> StepPlan:
    return StepPlan("n", complete_output={"names": sorted(run.vars)})


NODE = WorkflowSpec("names", "n", {"n": _node})


def test_a_start_record_wraps_marker_names_and_nothing_else(tmp_path: Path) -> None:
    """The whole variables are written as one value: wrapped in ``$lit`` only when a name is a marker key."""
    store = FileStore(tmp_path, durability="none")
    rt = store.runtime(redactor=NoRedaction())
    marked = rt.start(workflow=NODE, vars=copy.deepcopy(ALL_NAMES))
    plain = rt.start(workflow=NODE, vars={"a": {"$v": 1}})
    def first_line(rid: str) -> Any:
        line = (tmp_path / "runs" / rid / "ledger.jsonl").read_bytes().split(b"\n")[0]
        return json.loads(line)["delta"]["vars"]

    ops = first_line(marked)
    assert ops[0][:2] == ["s", []] and list(ops[0][2]) == ["$lit"], ops
    assert sorted(ops[0][2]["$lit"]) == sorted(MARKER_KEYS)
    plain_ops = first_line(plain)
    assert plain_ops == [["s", [], {"a": {"$lit": {"$v": 1}}}]]
    state = rt.tick(workflow=NODE, run_id=marked)
    assert state.output == {"names": sorted(MARKER_KEYS)}
    assert canonical(state.vars) == canonical(ALL_NAMES)
    # The checkpoint's state document holds the names themselves.
    doc = json.loads((tmp_path / "runs" / marked / "run.json").read_text())
    assert sorted(doc["state"]["run"]["vars"]) == sorted(MARKER_KEYS)
    store.close()
    assert _fresh_vars(tmp_path, marked) == canonical(ALL_NAMES)
    # Every reader decodes the root name by name: the stored run, the index's shown run, reveal.
    reader = FileStore(tmp_path, durability="none")
    try:
        loaded = reader.runs.load(marked)
        assert loaded is not None and canonical(loaded.vars) == canonical(ALL_NAMES)
        checkpoint = reader.runs.load_checkpoint(marked)
        assert checkpoint is not None
        assert sorted(checkpoint.shown_run().vars) == sorted(MARKER_KEYS)
        assert reader.runtime().reveal(marked, "vars.$lit") == ALL_NAMES["$lit"]
        assert [r.run_id for r in reader.runs.list_runs() if sorted(r.vars) == sorted(MARKER_KEYS)] == [marked]
    finally:
        reader.close()
    assert verify_run(tmp_path, marked).ok
    _independent_ok(tmp_path, marked)


def test_a_whole_vars_record_with_another_marker_is_unreplayable(tmp_path: Path) -> None:
    """``["s", [], {"$v": id}]`` is no set of variables: the run is refused, never half-read."""
    from abstractruntime.core.state import StateImage
    from abstractruntime.core.values import ValueTable
    from abstractruntime.core.wal import apply_record

    image = StateImage.blank("r")
    bad = {"kind": "edit", "delta": {"vars": [["s", [], {"$v": "0" * 64}]]}}
    try:
        apply_record(image, bad, ValueTable(), "r")
    except ValueError as exc:
        assert "replace all vars" in str(exc)
    else:
        raise AssertionError("a $v object replaced all vars")
    good = {"kind": "edit", "delta": {"vars": [["s", [], {"$lit": {"$v": 1, "$lit": {"$lit": {"$v": 2}}}}]]}}
    apply_record(image, good, ValueTable(), "r")
    assert image.vars == {"$v": 1, "$lit": {"$lit": {"$v": 2}}}


def test_a_path_below_the_root_writing_a_marker_key_keeps_the_image_in_stored_form() -> None:
    """A record setting ``vars.a.$v`` (our writer sets such an object whole; another may not)
    leaves ``a`` wrapped in ``$lit``, read back as the object with a key ``$v``."""
    from abstractruntime.core.markers import run_value
    from abstractruntime.core.secret_values import shown_text
    from abstractruntime.core.state import StateImage
    from abstractruntime.core.values import ValueTable
    from abstractruntime.core.wal import apply_record

    image = StateImage.blank("r")
    table = ValueTable()
    apply_record(image, {"kind": "edit", "delta": {"vars": [["s", ["a"], {"b": 1}]]}}, table, "r")
    apply_record(image, {"kind": "edit", "delta": {"vars": [["s", ["a", "$v"], 7], ["s", ["$v", "$lit"], 8]]}},
                 table, "r")
    assert image.vars == {"a": {"$lit": {"b": 1, "$v": 7}}, "$v": {"$lit": {"$lit": 8}}}
    assert table.resolve(run_value(image.run), shown_text)["vars"] == {"a": {"b": 1, "$v": 7}, "$v": {"$lit": 8}}
    assert table.closure(run_value(image.run)) == set()
    # A path through a marker key below the root: each object it is written into is wrapped.
    apply_record(image, {"kind": "edit", "delta": {"vars": [["s", ["b", "$v", "$val", "c"], 1],
                                                            ["d", ["a", "$v"]]]}}, table, "r")
    assert table.resolve(run_value(image.run), shown_text)["vars"] == {
        "a": {"b": 1}, "$v": {"$lit": 8}, "b": {"$v": {"$val": {"c": 1}}}}
    assert image.vars["b"] == {"$lit": {"$v": {"$lit": {"$val": {"c": 1}}}}}


def test_snapshot_restore_and_fork_carry_marker_names(tmp_path: Path) -> None:
    store = FileStore(tmp_path, durability="none")
    rt = store.runtime(redactor=NoRedaction())
    run_id = rt.start(workflow=NODE, vars=copy.deepcopy(ALL_NAMES))
    snap = take_snapshot(rt, run_id, name="before")
    store.snapshots.save(snap)
    rt.tick(workflow=NODE, run_id=run_id)
    restore_snapshot(rt, store.snapshots.load(snap.snapshot_id), workflow=NODE)
    assert canonical(rt.get_state(run_id).vars) == canonical(ALL_NAMES)
    assert rt.get_state(run_id).status.value == "running"
    forked = fork_snapshot(rt, store.snapshots.load(snap.snapshot_id), workflow=NODE)
    assert rt.tick(workflow=NODE, run_id=forked).output == {"names": sorted(MARKER_KEYS)}
    assert rt.tick(workflow=NODE, run_id=run_id).output == {"names": sorted(MARKER_KEYS)}
    store.close()
    for rid in (run_id, forked):
        assert _fresh_vars(tmp_path, rid) == canonical(ALL_NAMES)
        assert verify_run(tmp_path, rid).ok
        _independent_ok(tmp_path, rid)


CHILD = r"""
import os, signal, sys
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.redaction import NoRedaction
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore

def first(run, ctx):
    run.vars["$val"] = {"$ext": 1}
    del run.vars["$shown"]
    return StepPlan("first", effect=Effect(EffectType.TOOL_CALLS, {}, result_key="$items.$v"), next_node="last")

def last(run, ctx):
    return StepPlan("last", complete_output={"names": sorted(run.vars)})

WF = WorkflowSpec("killed", "first", {"first": first, "last": last})

def die(run, effect):
    os.kill(os.getpid(), signal.SIGKILL)  # the intent is durable, the outcome never written

store = FileStore(sys.argv[1], durability="fsync")
rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: die})
rid = rt.start(workflow=WF, run_id="killed-run", vars={"$v": 1, "$lit": {"$lit": 2}, "$shown": "x"})
print(rid, flush=True)
rt.tick(workflow=WF, run_id=rid)
"""


def test_a_run_killed_mid_effect_resumes_with_marker_names(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    root = tmp_path / "store"
    proc = subprocess.run([sys.executable, str(script), str(root)], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == -9, proc.stderr

    # The same workflow in this process, its effect now completing.
    def first(run: Any, ctx: Any) -> StepPlan:
        run.vars["$val"] = {"$ext": 1}
        del run.vars["$shown"]
        return StepPlan("first", effect=Effect(EffectType.TOOL_CALLS, {}, result_key="$items.$v"), next_node="last")

    def last(run: Any, ctx: Any) -> StepPlan:
        return StepPlan("last", complete_output={"names": sorted(run.vars)})

    wf = WorkflowSpec("killed", "first", {"first": first, "last": last})
    store = FileStore(root, durability="fsync")
    rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: lambda run, eff: EffectOutcome.completed({"$lit": 3})})
    state = rt.tick(workflow=wf, run_id="killed-run")
    assert state.status.value == "completed", state
    expected = {"$v": 1, "$lit": {"$lit": 2}, "$val": {"$ext": 1}, "$items": {"$v": {"$lit": 3}}}
    assert canonical(state.vars) == canonical(expected)
    assert state.output == {"names": sorted(expected)}
    store.close()
    assert _fresh_vars(root, "killed-run") == canonical(expected)
    assert verify_run(root, "killed-run").ok
    _independent_ok(root, "killed-run")


def test_an_edit_carrying_marker_names_is_recorded_and_replayed(tmp_path: Path) -> None:
    """An ``edit`` record replaces every variable at once (``["s", [], {"$lit": …}]``)."""
    store = FileStore(tmp_path, durability="none")
    rt = store.runtime(redactor=NoRedaction())
    run_id = rt.start(workflow=NODE, vars={"a": 1})
    run = rt.get_state(run_id)
    run.vars = {"$v": {"$v": 1}, "$lit": 2, "a": {"$ext": "x", "$items": []}}
    rt.record_edit(run)
    assert rt.tick(workflow=NODE, run_id=run_id).output == {"names": ["$lit", "$v", "a"]}
    store.close()
    expected = canonical({"$v": {"$v": 1}, "$lit": 2, "a": {"$ext": "x", "$items": []}})
    assert _fresh_vars(tmp_path, run_id) == expected
    (tmp_path / "runs" / run_id / "run.json").unlink()
    assert _fresh_vars(tmp_path, run_id) == expected, "the ledger alone replays to another state"
    assert verify_run(tmp_path, run_id).ok
    _independent_ok(tmp_path, run_id)


def test_the_command_shows_marker_names_as_variables(tmp_path: Path) -> None:
    """``runs show --json`` prints each variable under its name; ``report`` writes its page;
    ``verify`` passes (the installed command, as a user runs it)."""
    store = FileStore(tmp_path, durability="none")
    rt = store.runtime(redactor=NoRedaction())
    run_id = rt.start(workflow=NODE, vars=copy.deepcopy(ALL_NAMES), run_id="marked")
    rt.tick(workflow=NODE, run_id=run_id)
    store.close()

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "abstractruntime", "--store", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=120, cwd=REPO)

    shown = command("runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert canonical(json.loads(shown.stdout)["run"]["vars"]) == canonical(ALL_NAMES)
    page = command("report", run_id, "-o", str(tmp_path / "page.html"))
    assert page.returncode == 0 and "Traceback" not in page.stderr, page.stderr
    assert (tmp_path / "page.html").stat().st_size > 0
    checked = command("verify", run_id)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_variable_named_secret_is_redacted_by_its_name_and_read_back(tmp_path: Path) -> None:
    """With the default redactor a variable named ``$secret`` is a secret (by its name): the
    ledger holds its marker, the run reopened holds its real value, and it verifies."""
    store = FileStore(tmp_path, durability="none")
    rt = store.runtime()
    start = {"$secret": "hunter2-value", "$shown": {"$secret": "other-value", "a": 1}, "$v": "plain"}
    run_id = rt.start(workflow=NODE, vars=copy.deepcopy(start))
    store.close()
    ledger = (tmp_path / "runs" / run_id / "ledger.jsonl").read_text()
    assert "hunter2-value" not in ledger and "other-value" not in ledger
    assert _fresh_vars(tmp_path, run_id) == canonical(start)
    store = FileStore(tmp_path, durability="none")
    state = store.runtime().tick(workflow=NODE, run_id=run_id)
    assert state.output == {"names": ["$secret", "$shown", "$v"]}
    store.close()
    assert verify_run(tmp_path, run_id).ok
    _independent_ok(tmp_path, run_id)


def test_a_ledger_replacing_all_vars_with_a_stored_value_is_unreplayable(tmp_path: Path) -> None:
    """A forger rewrites the start record's whole variables as ``{"$val": …}`` (a valid stored
    value, but not the variables' object) and rehashes the chain: ``verify`` says the record
    cannot be replayed and opening the run is refused, one line, no traceback."""
    from abstractruntime.core.errors import CorruptRecordError
    from prov_helpers import read_records, rehash, write_records

    store = FileStore(tmp_path, durability="none")
    rt = store.runtime(redactor=NoRedaction())
    run_id = rt.start(workflow=NODE, vars={"$v": 1})
    store.close()
    ledger = tmp_path / "runs" / run_id / "ledger.jsonl"
    records = read_records(ledger)
    records[0]["delta"]["vars"] = [["s", [], {"$val": {"$lit": {"$v": 1}}}]]
    write_records(ledger, rehash(records))
    report = verify_run(tmp_path, run_id)
    assert not report.ok and "unreplayable" in json.dumps(report.to_dict()), report.to_dict()
    (tmp_path / "runs" / run_id / "run.json").unlink()
    reader = FileStore(tmp_path, durability="none")
    try:
        rt = reader.runtime()
        try:
            rt.get_state(run_id)
        except CorruptRecordError as exc:
            assert "replace all vars" in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError("a $val object was taken as the variables")
    finally:
        reader.close()
