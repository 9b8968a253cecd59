"""`resume` of a durable timer: an answer is refused; `--fire-timer` fires it, on the record."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

CLI = str(Path(sys.executable).parent / "abstractruntime")

TIMER_2099 = textwrap.dedent('''
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

    workflow = WorkflowSpec("t", "sleep", {
        "sleep": lambda run, ctx: StepPlan("sleep", next_node="done", effect=Effect(
            EffectType.WAIT_UNTIL, {"until": "2099-01-01T00:00:00Z"}, "timer")),
        "done": lambda run, ctx: StepPlan("done", complete_output={"timer": run.vars["timer"]})})
''')


def _cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--store", str(store), "--no-input", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _timer(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "wf.py").write_text(TIMER_2099)
    store = tmp_path / "store"
    started = _cli(store, "run", str(tmp_path / "wf.py"), "--run-id", "t")
    assert started.returncode == 5, started.stderr
    return store, started.stdout.strip()


def test_an_answer_to_a_timer_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    store, handle = _timer(tmp_path)
    assert handle == "t@w1"
    ledger = (store / "runs" / "t" / "ledger.jsonl").read_bytes()
    for args in (("t@w1", "--answer", "skip"), ("t", "--current", "--payload", "{}")):
        refused = _cli(store, "resume", *args)
        assert refused.returncode == 2, refused
        assert "timer" in refused.stderr and "--fire-timer" in refused.stderr and "Traceback" not in refused.stderr
    as_json = _cli(store, "resume", "t@w1", "--answer", "skip", "--json")
    assert json.loads(as_json.stdout)["error"]["code"] == "timer_wait"
    wait_key = json.loads(_cli(store, "runs", "show", "t", "--json").stdout)["run"]["waiting"]["wait_key"]
    emitted = _cli(store, "emit", wait_key, "--payload", "{}")
    assert emitted.returncode == 1 and "timer" in emitted.stderr
    assert (store / "runs" / "t" / "ledger.jsonl").read_bytes() == ledger
    assert json.loads(_cli(store, "runs", "show", "t", "--json").stdout)["run"]["status"] == "waiting"


def test_fire_timer_fires_it_once_on_the_record(tmp_path: Path) -> None:
    store, handle = _timer(tmp_path)
    fired = _cli(store, "resume", handle, "--fire-timer", "--json")
    assert fired.returncode == 0, fired.stderr
    assert json.loads(fired.stdout)["output"]["timer"] == {"until": "2099-01-01T00:00:00+00:00", "ready": True}
    resume = [r for r in json.loads(_cli(store, "ledger", "show", "t", "--json").stdout) if r["kind"] == "resume"]
    assert [(r["result"]["reason"], r["result"]["fired_by"], r["result"]["wait_id"]) for r in resume] == [
        ("until", "operator", "w1")]
    again = _cli(store, "resume", handle, "--fire-timer")
    assert again.returncode == 1 and "already answered" in again.stderr
    assert _cli(store, "verify", "t").returncode == 0


def test_fire_timer_is_for_timers_only_and_takes_no_answer(tmp_path: Path) -> None:
    store, handle = _timer(tmp_path)
    both = _cli(store, "resume", handle, "--fire-timer", "--answer", "x")
    assert both.returncode == 2 and "--fire-timer" in both.stderr
    approval = Path(__file__).resolve().parents[2] / "sample_runs" / "workflows" / "approval.py"
    asked = _cli(store, "run", str(approval), "--run-id", "a")
    assert asked.returncode == 5
    not_a_timer = _cli(store, "resume", asked.stdout.strip(), "--fire-timer")
    assert not_a_timer.returncode == 2 and "not a timer" in not_a_timer.stderr
    assert json.loads(_cli(store, "runs", "show", "a", "--json").stdout)["run"]["status"] == "waiting"
