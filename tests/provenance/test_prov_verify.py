"""verify_run / verify_store: the report, crash states that are not failures, read-only reading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from abstractruntime.core.errors import RunExistsError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.errors import (
    InvalidIdError,
    InvalidInputError,
    NotFoundError,
    RunNotFoundError,
    VerificationFailedError,
)
from abstractruntime.core.spec import WorkflowSource
from abstractruntime.storage.verify import MAX_FINDINGS, verify_run, verify_store

from prov_helpers import (
    DEMO,
    SimulatedCrash,
    checkpoint_path,
    crashing_runtime,
    finish,
    ledger_path,
    open_demo,
    problem_types,
    read_records,
    run_demo,
    start_waiting,
    tree_bytes,
)

REPORT_KEYS = {"ok", "run_id", "path", "count", "lines", "head_seq", "head_hash", "checkpoint_head", "run_status",
               "expect_head", "expect_head_seq", "signature", "signature_key_id", "bookmarks_checked", "pruned",
               "problems", "problems_omitted", "notes", "notes_omitted"}


def test_clean_report(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store, runtime = open_demo(root)
    run_id = run_demo(runtime, "r1")
    records = read_records(ledger_path(root, run_id))

    for target in (root, str(root), store):
        report = verify_run(target, run_id)
        assert report.ok and report.problems == [] and report.notes == []
        assert (report.count, report.lines, report.head_seq) == (10, 10, 10)
        assert report.head_hash == records[-1]["record_hash"]
        assert report.checkpoint_head is not None
        assert (report.checkpoint_head.seq, report.checkpoint_head.head_hash) == (10, report.head_hash)
        assert report.run_status == "completed" and report.signature == "absent"

    doc = json.loads(json.dumps(report.to_dict()))
    assert set(doc) == REPORT_KEYS
    assert doc["ok"] is True and doc["checkpoint_head"] == {"seq": 10, "head_hash": report.head_hash}


def test_problem_entries_have_type_seq_line_message(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _, runtime = open_demo(root)
    run_demo(runtime, "r1")
    lines = ledger_path(root, "r1").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"prompt":"hi"', b'"prompt":"HI"')
    ledger_path(root, "r1").write_bytes(b"".join(lines))
    doc = verify_run(root, "r1").to_dict()
    assert doc["ok"] is False
    assert doc["problems"] == [{"type": "record_hash_mismatch", "seq": 3, "line": 3,
                                "message": doc["problems"][0]["message"], "details": doc["problems"][0]["details"]}]
    assert doc["problems"][0]["details"]["stored"] == json.loads(lines[2])["record_hash"]


def test_torn_tails_are_notes_and_nothing_is_repaired(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _, runtime = open_demo(root)
    run_demo(runtime, "r1")
    path = ledger_path(root, "r1")
    clean = path.read_bytes()
    for tail in (b'{"format":1,"run_id":"r1","se', b"\x00" * 64 + b"\n"):
        path.write_bytes(clean + tail)
        before = tree_bytes(root)
        report = verify_run(root, "r1")
        assert report.ok and report.count == 10
        assert [n.type for n in report.notes] == ["torn_tail"]
        assert report.notes[0].line == 11
        assert tree_bytes(root) == before  # verify never writes, not even to cut a torn tail


def test_a_crash_before_the_checkpoint_is_a_note(tmp_path: Path) -> None:
    root = tmp_path / "store"
    runs, runtime = crashing_runtime(root)
    waiting = start_waiting(runtime, "r1")
    runs.crash_next = True
    with pytest.raises(SimulatedCrash):
        # The answer and the next effect's intent are in the ledger (one batch); the checkpoint
        # written before that effect runs is the write that crashes: run.json still says seq 6.
        finish(runtime, waiting)

    report = verify_run(root, "r1")
    assert report.ok
    assert (report.head_seq, report.checkpoint_head.seq) == (8, 6)
    assert [(n.type, n.seq) for n in report.notes] == [("uncommitted_tail", 7)]
    # The ledger is the log: the run is answered and inside its effect; the next tick goes on.
    assert runtime.get_state("r1").status.value == "running"
    runtime.tick(workflow=DEMO, run_id="r1")
    after = verify_run(root, "r1")
    assert after.ok and after.notes == [] and after.run_status == "completed"


def test_a_crash_during_start_is_a_note(tmp_path: Path) -> None:
    root = tmp_path / "store"
    runs, runtime = crashing_runtime(root)
    runs.crash_next = True
    with pytest.raises(SimulatedCrash):
        runtime.start(workflow=DEMO, run_id="r1")
    assert not checkpoint_path(root, "r1").exists()
    report = verify_run(root, "r1")
    assert report.ok and report.count == 1
    assert [n.type for n in report.notes] == ["checkpoint_missing"]


def test_expect_head_semantics(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _, runtime = open_demo(root)
    waiting = start_waiting(runtime, "r1")
    published = verify_run(root, "r1").head_hash
    now = verify_run(root, "r1", expect_head=published)
    assert now.ok and now.expect_head_seq == 6 and "current head" in now.notes[0].message

    finish(runtime, waiting)
    later = verify_run(root, "r1", expect_head=published.upper())  # hex case does not matter
    assert later.ok and later.expect_head == published and later.expect_head_seq == 6
    assert "4 record(s) were added after it" in later.notes[0].message

    missing = verify_run(root, "r1", expect_head="ab" * 32)
    assert problem_types(missing) == {"expected_head_missing"}
    for bad in ("abc", "zz" * 32, 42):
        with pytest.raises(InvalidInputError):
            verify_run(root, "r1", expect_head=bad)


def test_unknown_runs_and_bad_ids(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _, runtime = open_demo(root)
    run_demo(runtime, "r1")
    with pytest.raises(RunNotFoundError):
        verify_run(root, "nope")
    with pytest.raises(RunNotFoundError):
        verify_run(tmp_path / "no-store", "r1")
    with pytest.raises(InvalidIdError):
        verify_run(root, "../r1")
    (root / "runs" / "empty").mkdir()
    with pytest.raises(RunNotFoundError):
        verify_run(root, "empty")


def test_findings_are_capped(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _, runtime = open_demo(root)
    run_demo(runtime, "r1")
    with ledger_path(root, "r1").open("ab") as handle:
        handle.write(b"[1]\n" * (MAX_FINDINGS + 50))
    report = verify_run(root, "r1")
    assert len(report.problems) == MAX_FINDINGS and report.problems_omitted == 50
    assert not report.ok and report.to_dict()["problems_omitted"] == 50


def test_verify_never_imports_workflow_code(tmp_path: Path) -> None:
    root = tmp_path / "store"
    flow = tmp_path / "flow.py"
    marker = tmp_path / "imported"
    flow.write_text(f"open({str(marker)!r}, 'w').close()\n")
    _, runtime = open_demo(root)
    workflow = DEMO.with_source(WorkflowSource(str(flow), "0" * 64))
    run_id = runtime.start(workflow=workflow, run_id="r1")
    runtime.tick(workflow=workflow, run_id=run_id)
    script = (f"import sys, json; from abstractruntime.storage.verify import verify_store; "
              f"r = verify_store({str(root)!r}); "
              "print(json.dumps([r[0].ok, sorted(m for m in sys.modules if m.startswith('abstractruntime'))]))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ok, modules = json.loads(proc.stdout)
    assert ok and not marker.exists()
    assert "abstractruntime.core.runtime" not in modules and "abstractruntime.loader" not in modules
    assert not any(m.startswith("abstractruntime.cli") for m in modules)


def test_verify_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _, runtime = open_demo(root)
    for run_id in ("c", "a", "b"):
        run_demo(runtime, run_id)
    (root / "runs" / "empty").mkdir()  # entries that are not runs fail: test_prov_verify_strays.py
    seen: list[tuple[int, int, str]] = []
    reports = verify_store(root, progress=lambda done, total, r: seen.append((done, total, r.run_id)))
    assert [r.run_id for r in reports] == ["a", "b", "c"] and all(r.ok for r in reports)
    assert seen == [(1, 3, "a"), (2, 3, "b"), (3, 3, "c")]

    heads = {r.run_id: r.head_hash for r in reports}
    mapped = verify_store(root, expect_head={"a": heads["a"], "b": heads["b"], "gone": heads["c"]})
    assert [(r.run_id, r.ok) for r in mapped] == [("a", True), ("b", True), ("c", True), ("gone", False)]
    assert problem_types(mapped[3]) == {"run_missing"}
    assert problem_types(verify_store(root, expect_head={"a": heads["b"]})[0]) == {"expected_head_missing"}

    single = verify_store(root, expect_head=heads["b"])
    assert all(r.ok for r in single)
    assert [(r.run_id, r.expect_head_seq) for r in single if r.expect_head] == [("b", 10)]
    nowhere = verify_store(root, expect_head="cd" * 32)
    assert all(problem_types(r) == {"expected_head_missing"} for r in nowhere)

    (tmp_path / "empty-store").mkdir()
    assert verify_store(tmp_path / "empty-store") == []
    with pytest.raises(VerificationFailedError):
        verify_store(tmp_path / "empty-store", expect_head="cd" * 32)
    with pytest.raises(NotFoundError):
        verify_store(tmp_path / "missing")


def test_verifying_while_a_run_advances_raises_no_false_alarm(tmp_path: Path) -> None:
    # verify reads run.json before the ledger and re-reads it before calling a rollback, so a
    # writer committing in between can only make the ledger look longer, never wrong.
    import threading
    import time

    from abstractruntime.core.models import Effect, EffectType, StepPlan
    from abstractruntime.core.spec import WorkflowSpec

    def loop(run, ctx):  # type: ignore[no-untyped-def]
        n = run.vars.get("n", 0)
        run.vars["n"] = n + 1
        if n >= 200:
            return StepPlan("loop", complete_output={"n": n})
        return StepPlan("loop", next_node="loop", effect=Effect(EffectType.LLM_CALL, {"prompt": f"p{n}"}))

    flow = WorkflowSpec("loop", "loop", {"loop": loop})
    root = tmp_path / "store"
    _, runtime = open_demo(root)
    run_id = runtime.start(workflow=flow, run_id="busy")
    writer = threading.Thread(target=lambda: runtime.tick(workflow=flow, run_id=run_id, max_steps=1000))
    writer.start()
    reports = []
    while writer.is_alive() or not reports:
        reports.append(verify_run(root, run_id))
        time.sleep(0.001)  # let the writer have the GIL too
    writer.join()
    reports.append(verify_run(root, run_id))
    assert all(r.ok for r in reports), [r.problems for r in reports if not r.ok][:1]
    assert reports[-1].run_status == "completed" and reports[-1].head_seq > 400


def test_symlinked_run_files_are_problems_not_crashes(tmp_path: Path) -> None:
    # Run files are never symlinks; one pointing elsewhere is reported, not followed.
    root = tmp_path / "store"
    _, runtime = open_demo(root)
    run_demo(runtime, "r1")
    for name, kind in (("run.json", "checkpoint_corrupt"), ("ledger.jsonl", "unreadable_ledger")):
        original = root / "runs" / "r1" / name
        elsewhere = tmp_path / f"copy-{name}"
        elsewhere.write_bytes(original.read_bytes())
        original.unlink()
        original.symlink_to(elsewhere)
        report = verify_run(root, "r1")
        assert kind in problem_types(report) and "symlink" in str(report.to_dict()["problems"])
        original.unlink()
        original.write_bytes(elsewhere.read_bytes())
    assert verify_run(root, "r1").ok


def test_a_start_retried_after_crashes_is_a_note(tmp_path: Path) -> None:
    root = tmp_path / "store"
    runs, runtime = crashing_runtime(root)
    runs.crash_next = True
    with pytest.raises(SimulatedCrash):
        runtime.start(workflow=DEMO, run_id="r1")  # the start record is durable, run.json is not
    report = verify_run(root, "r1")
    assert report.ok and report.count == 1 and [n.type for n in report.notes] == ["checkpoint_missing"]
    with pytest.raises(RunExistsError):
        runtime.start(workflow=DEMO, run_id="r1")  # creating a run is exclusive: the ledger holds it
    runtime.tick(workflow=DEMO, run_id="r1")  # rebuilt from the ledger, then checkpointed
    after = verify_run(root, "r1")
    assert after.ok and after.notes == [] and after.checkpoint_head is not None


_FUZZ_ROOT: dict[str, Path] = {}


def _fuzz_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "root" not in _FUZZ_ROOT:
        root = tmp_path_factory.mktemp("fuzz") / "store"
        store, runtime = open_demo(root)
        run_demo(runtime, "r1")
        store.bookmarks.add("r1", "b", seq=4)
        _FUZZ_ROOT["root"] = root
    return _FUZZ_ROOT["root"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(["ledger.jsonl", "run.json", "bookmarks.json"]),
       edits=st.lists(st.tuples(st.integers(min_value=0), st.binary(max_size=8)), min_size=1, max_size=4),
       replacement=st.none() | st.sampled_from([b'{"ledger": [], "run": "x", "format": 1}',
                                                b'{"format": 1, "bookmarks": {"b": {"seq": [1]}}}',
                                                b'{"format":1,"seq":{"a":1},"idempotency_key":[1]}\n', b"[]", b""]))
def test_verify_never_raises_on_damaged_files(tmp_path_factory: pytest.TempPathFactory, target: str,
                                              edits: list[tuple[int, bytes]], replacement: bytes | None) -> None:
    root = _fuzz_store(tmp_path_factory)
    path = root / "runs" / "r1" / target
    original = path.read_bytes()
    data = bytearray(original if replacement is None else replacement)
    for position, chunk in edits:
        at = position % (len(data) + 1)
        data[at:at + len(chunk)] = chunk
    try:
        path.write_bytes(bytes(data))
        report = verify_run(root, "r1")
        assert isinstance(report.to_dict()["problems"], list)
    finally:
        path.write_bytes(original)
