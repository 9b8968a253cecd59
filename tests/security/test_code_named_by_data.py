"""A data file never names code to run: workflow code comes from the operator or the hash chain."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from abstractruntime.storage.verify import verify_run

CLI = str(Path(sys.executable).parent / "abstractruntime")

GOOD = textwrap.dedent('''
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec
    workflow = WorkflowSpec("job", "wait", {
        "wait": lambda run, ctx: StepPlan("wait", next_node="done", effect=Effect(
            EffectType.WAIT_UNTIL, {"until": "2000-01-01T00:00:00+00:00"}, "t")),
        "done": lambda run, ctx: StepPlan("done", complete_output={"ok": True}),
    })
''')

EVIL = textwrap.dedent('''
    import os
    from pathlib import Path
    Path(os.environ["EVIL_MARKER"]).write_text("imported")
    from abstractruntime import StepPlan, WorkflowSpec
    workflow = WorkflowSpec("job", "wait", {"wait": lambda run, ctx: StepPlan("wait", complete_output={"evil": 1})})
''')

WAITING = textwrap.dedent('''
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec
    workflow = WorkflowSpec("job", "wait", {
        "wait": lambda run, ctx: StepPlan("wait", next_node="done", effect=Effect(
            EffectType.ASK_USER, {"prompt": "go?"}, "a")),
        "done": lambda run, ctx: StepPlan("done", complete_output={"ok": True}),
    })
''')


def _cli(store: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--store", str(store), "--no-input", *args], capture_output=True, text=True,
                          timeout=120, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture
def setting(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    flows, elsewhere = tmp_path / "flows", tmp_path / "elsewhere"
    flows.mkdir()
    elsewhere.mkdir()
    (flows / "wf.py").write_text(WAITING)
    (elsewhere / "evil.py").write_text(EVIL)
    env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_WORKFLOWS"}
    env["EVIL_MARKER"] = str(tmp_path / "marker")
    return tmp_path / "store", flows, elsewhere, env


def _point_checkpoint_at(store: Path, run_id: str, path: Path) -> None:
    ckpt = store / "runs" / run_id / "run.json"
    doc = json.loads(ckpt.read_text())
    doc["workflow"]["source"] = str(path)
    doc["workflow"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    ckpt.write_text(json.dumps(doc))


def test_a_checkpoint_pointing_at_other_code_is_refused_and_reported(setting: tuple[Path, Path, Path, dict[str, str]]) -> None:
    store, flows, elsewhere, env = setting
    started = _cli(store, "run", str(flows / "wf.py"), "--run-id", "r1", env=env)
    assert started.returncode == 5, started.stderr
    _point_checkpoint_at(store, "r1", elsewhere / "evil.py")
    for args in (("tick", "r1"), ("resume", "r1@w1", "--answer", "x"), ("worker", "--once")):
        result = _cli(store, *args, env=env)
        assert not Path(env["EVIL_MARKER"]).exists(), (args, result.stderr)
        if args[0] != "worker":
            assert result.returncode == 3, (args, result.returncode, result.stderr)
            assert "ledger recorded" in result.stderr
    report = verify_run(store, "r1")
    assert "checkpoint_workflow_mismatch" in {p.type for p in report.problems}
    assert _cli(store, "verify", "r1", env=env).returncode == 3


def test_the_chains_file_is_loaded_only_from_a_trusted_directory(setting: tuple[Path, Path, Path, dict[str, str]],
                                                                   tmp_path: Path) -> None:
    store, flows, elsewhere, env = setting
    # The operator names the code: trusted, wherever it is.
    (elsewhere / "wf.py").write_text(WAITING)
    started = _cli(store, "run", str(elsewhere / "wf.py"), "--run-id", "r2", env=env)
    assert started.returncode == 5, started.stderr
    # Started from `elsewhere`: the chain names elsewhere/wf.py, in the run's own directory.
    done = _cli(store, "resume", "r2@w1", "--answer", "yes", env=env)
    assert done.returncode == 0, done.stderr


def test_an_explicit_workflow_file_is_the_operators_choice(setting: tuple[Path, Path, Path, dict[str, str]]) -> None:
    store, flows, elsewhere, env = setting
    started = _cli(store, "run", str(flows / "wf.py"), "--run-id", "r3", env=env)
    assert started.returncode == 5, started.stderr
    copy = elsewhere / "copy.py"
    copy.write_text(WAITING)
    done = _cli(store, "resume", "r3@w1", "--answer", "yes", "--workflow", str(copy), env=env)
    assert done.returncode == 0, done.stderr
