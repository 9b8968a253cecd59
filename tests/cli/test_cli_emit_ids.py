"""`emit KEY --id ID`: an event id is delivered at most once per store, also after a kill or a race;
`--keep DURATION` keeps an event for the first run that waits on its key."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

CLI = str(Path(sys.executable).parent / "abstractruntime")

# Waits on "go" twice: a retried or duplicated event would answer the second wait.
TWICE = textwrap.dedent('''
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

    def wait(name, then):
        return lambda run, ctx: StepPlan(name, next_node=then, effect=Effect(
            EffectType.WAIT_EVENT, {"wait_key": "go"}, name))

    workflow = WorkflowSpec("twice", "first", {"first": wait("first", "second"), "second": wait("second", "done"),
                                               "done": lambda run, ctx: StepPlan("done", complete_output={})})
''')

ONCE = textwrap.dedent('''
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

    workflow = WorkflowSpec("once", "wait", {
        "wait": lambda run, ctx: StepPlan("wait", next_node="done", effect=Effect(
            EffectType.WAIT_EVENT, {"wait_key": "go"}, "got")),
        "done": lambda run, ctx: StepPlan("done", complete_output={"got": run.vars["got"]})})
''')

# Records an event with emit_event, then dies where the test says: before any run is resumed, or
# right after the first run's resume (before the event is marked delivered).
KILLED_EMIT = textwrap.dedent('''
    import os, sys
    from abstractruntime import open_store
    from abstractruntime.scheduler.events import emit_event
    from abstractruntime.workflow_files import load_for_run

    store = open_store(sys.argv[1], create=False)
    where = sys.argv[3]

    class DiesAfterResume:
        def __init__(self, runtime):
            self.runtime = runtime
        def resume(self, **kwargs):
            self.runtime.resume(**kwargs)
            os._exit(9)

    def resolve(run):
        if where == "before-resume":
            os._exit(9)
        loaded, runtime = load_for_run(store, run.run_id)
        return loaded.workflow, DiesAfterResume(runtime)

    emit_event(store.runs, "go", {"n": 1}, resolve=resolve, event_id=sys.argv[2], events=store.events)
''')


def _cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--store", str(store), "--no-input", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _start(store: Path, tmp_path: Path, source: str, *run_ids: str) -> None:
    path = tmp_path / "wf.py"
    path.write_text(source)
    store.mkdir(exist_ok=True)  # an empty store: emit never creates one
    for run_id in run_ids:
        started = _cli(store, "run", str(path), "--run-id", run_id)
        assert started.returncode == 5, started.stderr


def _deliveries(store: Path, run_id: str) -> list[tuple[str, str]]:
    ledger = json.loads(_cli(store, "ledger", "show", run_id, "--json").stdout)
    return [(r["result"]["wait_id"], r["result"].get("event_id")) for r in ledger if r["kind"] == "resume"]


def _wait_id(store: Path, run_id: str) -> str | None:
    run = json.loads(_cli(store, "runs", "show", run_id, "--json").stdout)["run"]
    return run["waiting"]["wait_id"] if run["waiting"] else run["status"]


def test_a_delivered_id_is_not_delivered_again_even_to_a_run_waiting_since(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _start(store, tmp_path, ONCE, "a")
    first = _cli(store, "emit", "go", "--id", "pay-1", "--payload", '{"amount": 1}')
    assert first.returncode == 0, first.stderr
    assert "event pay-1" in first.stderr
    assert _deliveries(store, "a") == [("w1", "pay-1")]
    _start(store, tmp_path, ONCE, "b")
    ledger_b = (store / "runs" / "b" / "ledger.jsonl").read_bytes()
    again = _cli(store, "emit", "go", "--id", "pay-1", "--payload", '{"amount": 1}', "--json")
    assert again.returncode == 0 and "already delivered" in again.stderr, again
    assert json.loads(again.stdout) == []
    assert (store / "runs" / "b" / "ledger.jsonl").read_bytes() == ledger_b
    assert _wait_id(store, "b") == "w1"
    other = _cli(store, "emit", "go", "--id", "pay-2", "--payload", '{"amount": 2}')
    assert other.returncode == 0 and _deliveries(store, "b") == [("w1", "pay-2")]
    # The record is private to the store's owner, like every other file of it.
    events = store / "events"
    assert stat.S_IMODE(events.stat().st_mode) == 0o700
    files = [p for p in events.rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert _cli(store, "verify", "--all").returncode == 0


def test_an_emit_without_an_id_still_answers_whoever_waits(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _start(store, tmp_path, TWICE, "a")
    assert _cli(store, "emit", "go").returncode == 0
    assert _cli(store, "emit", "go").returncode == 0  # no id: the second emit is a second event
    assert _deliveries(store, "a") == [("w1", None), ("w2", None)]


def test_an_emit_killed_after_recording_the_id_is_finished_by_the_next_emit_once(tmp_path: Path) -> None:
    for where in ("before-resume", "after-first-resume"):
        store = tmp_path / where
        _start(store, tmp_path, TWICE, "a", "b", "c")
        script = tmp_path / "killed.py"
        script.write_text(KILLED_EMIT)
        killed = subprocess.run([sys.executable, str(script), str(store), "e1", where], capture_output=True,
                                text=True, timeout=120)
        assert killed.returncode == 9, killed.stderr
        answered = 0 if where == "before-resume" else 1
        assert sum(len(_deliveries(store, r)) for r in "abc") == answered
        retried = _cli(store, "emit", "go", "--id", "e1", "--payload", '{"n": 1}')
        assert retried.returncode == 0, retried.stderr
        again = _cli(store, "emit", "go", "--id", "e1", "--payload", '{"n": 1}')
        assert again.returncode == 0 and "already delivered" in again.stderr
        for run_id in "abc":
            assert _deliveries(store, run_id) == [("w1", "e1")], (where, run_id)
            assert _wait_id(store, run_id) == "w2"


def test_concurrent_emits_of_one_id_deliver_it_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    runs = [f"r{k}" for k in range(6)]
    _start(store, tmp_path, TWICE, *runs)
    for round_, mode in enumerate((["--hand-off"], [])):
        procs = [subprocess.Popen([CLI, "--store", str(store), "emit", "go", "--id", f"race-{round_}", *mode],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL) for _ in range(4)]
        outcomes = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
        assert [code for _, _, code in outcomes] == [0, 0, 0, 0], outcomes
        assert sum("already delivered" in err or "being delivered" in err for _, err, _ in outcomes) == 3, outcomes
        if mode:
            assert _cli(store, "worker", "--once").returncode == 0  # the handed-off runs wait on w2 now
    for run_id in runs:
        # One answer per wait: the first id reached w1 only, the second w2 only.
        assert _deliveries(store, run_id) == [("w1", "race-0"), ("w2", "race-1")], run_id
        assert _wait_id(store, run_id) == "completed"


def test_a_kept_event_goes_to_the_first_run_that_waits_on_its_key(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _start(store, tmp_path, ONCE)
    kept = _cli(store, "emit", "go", "--id", "k1", "--keep", "10m", "--payload", '{"n": 1}')
    assert kept.returncode == 0 and "kept until" in kept.stderr, kept
    assert _cli(store, "emit", "go", "--id", "k1", "--keep", "10m", "--payload", '{"n": 1}').returncode == 0
    _start(store, tmp_path, ONCE, "first")
    time.sleep(0.01)
    _start(store, tmp_path, ONCE, "second")
    worked = _cli(store, "worker", "--once")
    assert worked.returncode == 0, worked.stderr
    assert json.loads(_cli(store, "runs", "show", "first", "--json").stdout)["run"]["output"] == {"got": {"n": 1}}
    assert _deliveries(store, "first") == [("w1", "k1")]
    assert _cli(store, "worker", "--once").returncode == 0
    assert _wait_id(store, "second") == "w1" and _deliveries(store, "second") == []
    again = _cli(store, "emit", "go", "--id", "k1", "--payload", '{"n": 1}')
    assert again.returncode == 0 and "already delivered" in again.stderr
    assert _wait_id(store, "second") == "w1"


def test_a_kept_event_is_delivered_by_emitting_its_id_again(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _start(store, tmp_path, ONCE)
    assert _cli(store, "emit", "go", "--id", "k2", "--keep", "1h", "--payload", '{"n": 2}').returncode == 0
    _start(store, tmp_path, ONCE, "r")
    again = _cli(store, "emit", "go", "--id", "k2", "--payload", '{"n": 2}')
    assert again.returncode == 0 and "1 run(s) resumed" in again.stderr, again
    assert _deliveries(store, "r") == [("w1", "k2")] and _wait_id(store, "r") == "completed"
    changed = _cli(store, "emit", "go", "--id", "k2", "--payload", '{"n": 3}')
    assert changed.returncode == 0 and "already delivered" in changed.stderr


def test_an_expired_kept_event_is_dropped(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _start(store, tmp_path, ONCE)
    assert _cli(store, "emit", "go", "--id", "x", "--keep", "1s").returncode == 0
    time.sleep(1.2)
    _start(store, tmp_path, ONCE, "late")
    assert _cli(store, "worker", "--once").returncode == 0
    assert _wait_id(store, "late") == "w1"
    expired = _cli(store, "emit", "go", "--id", "x")
    assert expired.returncode == 0 and "expired" in expired.stderr
    assert _wait_id(store, "late") == "w1"
    assert not list((store / "events" / "kept").iterdir())


def test_keep_needs_an_id_and_a_duration(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _start(store, tmp_path, ONCE)
    no_id = _cli(store, "emit", "go", "--keep", "10m")
    assert no_id.returncode == 2 and "--id" in no_id.stderr
    bad = _cli(store, "emit", "go", "--id", "z", "--keep", "soon")
    assert bad.returncode == 2 and "duration" in bad.stderr
    assert not [p for p in store.rglob("*.jsonl") if p.parent.name == "events" and p.stat().st_size]


def test_the_events_directory_is_as_the_file_format_page_describes(tmp_path: Path) -> None:
    import hashlib

    from abstractruntime.core.canonical import canonical_json, sha256_hex

    store = tmp_path / "store"
    _start(store, tmp_path, ONCE)
    payload = {"n": 7, "é": [1.5, None]}
    assert _cli(store, "emit", "go", "--id", "order 7/β", "--keep", "1h", "--payload",
                json.dumps(payload)).returncode == 0
    name = hashlib.sha256("order 7/β".encode("utf-8")).hexdigest()
    event_file, kept = store / "events" / f"{name}.jsonl", store / "events" / "kept" / name
    first = json.loads(event_file.read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"format", "event_id", "event_key", "payload_sha256", "created_at", "keep_until", "targets"}
    assert (first["format"], first["event_id"], first["event_key"], first["targets"]) == (1, "order 7/β", "go", [])
    assert first["payload_sha256"] == sha256_hex(canonical_json(payload)) and first["keep_until"]
    assert kept.read_bytes() == canonical_json(payload) and "1.5" not in event_file.read_text()
    assert {stat.S_IMODE(p.stat().st_mode) for p in (event_file, kept)} == {0o600}
    assert {stat.S_IMODE(p.stat().st_mode) for p in (store / "events", store / "events" / "kept")} == {0o700}
    _start(store, tmp_path, ONCE, "r7")
    assert _cli(store, "worker", "--once").returncode == 0
    lines = [json.loads(line) for line in event_file.read_text(encoding="utf-8").splitlines()]
    assert lines[1]["target"] == {"run_id": "r7", "wait_id": "w1"} and "at" in lines[1]
    assert lines[2]["state"] == "delivered" and "at" in lines[2]
    assert not kept.exists()


def test_an_id_whose_record_was_deleted_is_not_given_again_to_the_run_that_got_it(tmp_path: Path) -> None:
    # The event log is a convenience: the run's ledger shows the event given to it (result.event_id).
    store = tmp_path / "store"
    _start(store, tmp_path, TWICE, "a")
    assert _cli(store, "emit", "go", "--id", "e1").returncode == 0
    assert _deliveries(store, "a") == [("w1", "e1")]
    for path in (store / "events").rglob("*"):
        if path.is_file():
            path.unlink()
    again = _cli(store, "emit", "go", "--id", "e1")
    assert again.returncode == 0 and "already delivered" in again.stderr, again
    assert _deliveries(store, "a") == [("w1", "e1")] and _wait_id(store, "a") == "w2"
    assert _cli(store, "emit", "go", "--id", "e2").returncode == 0
    assert _deliveries(store, "a") == [("w1", "e1"), ("w2", "e2")]
