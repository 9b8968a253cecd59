"""Bad input: one stderr line, the documented exit code, and nothing written to the store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cli_support import store_files


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("args", [
    ["runs", "show", "nope"],
    ["ledger", "show", "nope"],
    ["resume", "nope", "--answer", "x"],
    ["cancel", "nope"],
    ["tick", "nope"],
    ["verify", "nope"],
    ["snapshot", "create", "nope", "--name", "x"],
    ["bookmark", "add", "nope", "b"],
])
def test_unknown_run_is_4(cli, store: Path, args: list[str]) -> None:
    r = cli(*args)
    assert r.exit_code == 4
    assert "nope" in one_error_line(r.stderr)
    assert r.stdout == ""
    assert not (store / "runs" / "nope").exists()


@pytest.mark.parametrize("run_id", ["a/b", "..", "../etc", "a..b", "_x", "sp ace", "x" * 200])
def test_unsafe_run_id_is_2(cli, store: Path, wf: Path, run_id: str) -> None:
    for args in (["runs", "show", run_id], ["resume", run_id, "--answer", "x"],
                 ["run", str(wf / "tools.py"), "--run-id", run_id]):
        r = cli(*args)
        assert r.exit_code == 2, (args, r.stderr)
        assert "Invalid run id" in one_error_line(r.stderr)
    assert store_files(store) == {}


def test_malformed_payload_is_2_and_writes_nothing(cli, store: Path, wf: Path) -> None:
    cli("run", str(wf / "event.py"), "--run-id", "e1")
    before = store_files(store)
    for bad in ('{"amount": 1', "NaN", '{"a": 1, "a": 2}'):
        r = cli("resume", "e1", "--current", "--payload", bad)
        assert r.exit_code == 2
        assert "--payload is not valid JSON" in one_error_line(r.stderr)
        r = cli("emit", "payment:o-1", "--payload", bad)
        assert r.exit_code == 2
    assert cli("run", str(wf / "tools.py"), "--vars-json", "[1]").exit_code == 2
    assert cli("run", str(wf / "tools.py"), "--var", "novalue").exit_code == 2
    assert store_files(store) == before


def test_answer_outside_choices_is_2(cli, store: Path, wf: Path) -> None:
    cli("run", str(wf / "approval.py"), "--run-id", "a1")
    before = store_files(store)
    r = cli("resume", "a1", "--current", "--answer", "maybe")
    assert r.exit_code == 2
    assert "not one of the choices: yes, no" in one_error_line(r.stderr)
    assert store_files(store) == before


def test_two_answer_sources_is_2(cli, wf: Path) -> None:
    cli("run", str(wf / "approval.py"), "--run-id", "a1")
    r = cli("resume", "a1", "--current", "--answer", "yes", "--payload", "{}")
    assert r.exit_code == 2 and "only one of" in one_error_line(r.stderr)


def test_workflow_syntax_error_is_1_naming_file_and_line(cli, store: Path, tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("import os\n\nworkflow = (\n")
    r = cli("run", str(path))
    assert r.exit_code == 1
    line = one_error_line(r.stderr)
    assert f"{path}:3:" in line and "syntax error" in line
    assert not (store / "runs").exists() or list((store / "runs").iterdir()) == []


def test_workflow_without_workflow_is_1(cli, store: Path, tmp_path: Path) -> None:
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    r = cli("run", str(path))
    assert r.exit_code == 1
    assert f"{path}: defines no attribute 'workflow'" in one_error_line(r.stderr)
    path.write_text("x = 1\nworkflow = 42\n")
    r = cli("run", str(path))
    assert r.exit_code == 1
    assert f"{path}:2: 'workflow' is a int, not a WorkflowSpec" in one_error_line(r.stderr)
    assert cli("run", str(tmp_path / "absent.py")).exit_code == 1


def test_corrupt_run_file_is_1_naming_file_and_line(cli, store: Path, wf: Path) -> None:
    cli("run", str(wf / "tools.py"), "--run-id", "c1")
    path = store / "runs" / "c1" / "run.json"
    path.write_text('{"format": 1,\n "run": {oops}\n}\n')
    r = cli("runs", "show", "c1")
    if r.exit_code == 0:
        # The checkpoint is a cache of the ledger: a kernel that rebuilds it must get the run right.
        assert "status\tcompleted" in r.stdout
    else:
        assert r.exit_code == 1
        line = one_error_line(r.stderr)
        assert str(path) in line and "line 2" in line
    assert cli("resume", "c1", "--current", "--answer", "x").exit_code == 1


def test_corrupt_ledger_line_is_1_naming_file_and_line(cli, store: Path, wf: Path) -> None:
    cli("run", str(wf / "tools.py"), "--run-id", "c2")
    ledger = store / "runs" / "c2" / "ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    lines[1] = "{not json}\n"
    ledger.write_text("".join(lines))
    r = cli("ledger", "show", "c2")
    assert r.exit_code == 1
    assert f"{ledger}:2" in one_error_line(r.stderr)
    r = cli("verify", "c2")
    assert r.exit_code == 3


def test_resume_not_waiting_is_1(cli, store: Path, wf: Path) -> None:
    cli("run", str(wf / "tools.py"), "--run-id", "done")
    before = store_files(store)
    r = cli("resume", "done", "--current", "--answer", "x")
    assert r.exit_code == 1
    assert "not waiting" in one_error_line(r.stderr)
    assert store_files(store) == before


def test_changed_workflow_is_1_naming_both_hashes(cli, store: Path, wf: Path) -> None:
    path = wf / "approval.py"
    old = hashlib.sha256(path.read_bytes()).hexdigest()
    cli("run", str(path), "--run-id", "d1")
    with path.open("a") as handle:
        handle.write("\n# edited after the run started\n")
    new = hashlib.sha256(path.read_bytes()).hexdigest()
    before = store_files(store)
    r = cli("resume", "d1", "--current", "--answer", "yes")
    assert r.exit_code == 1
    line = one_error_line(r.stderr)
    assert old in line and new in line and "--allow-drift" in line
    assert store_files(store) == before
    r = cli("resume", "d1", "--current", "--answer", "yes", "--allow-drift", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "completed"
    ckpt = json.loads(cli("runs", "show", "d1", "--json").stdout)
    assert ckpt["workflow"]["sha256"] == new


def test_resume_without_answer_and_no_tty_exits_5(cli, wf: Path) -> None:
    cli("run", str(wf / "approval.py"), "--run-id", "n1")
    r = cli("resume", "n1", "--current", "--json")
    assert r.exit_code == 5
    assert json.loads(r.stdout)["waiting"]["choices"] == ["yes", "no"]
    r = cli("resume", "n1")
    assert r.exit_code == 5 and r.stdout.split("@")[0] == "n1"


def test_unexpected_exception_is_one_line(cli, tmp_path: Path) -> None:
    path = tmp_path / "handler_bug.py"
    path.write_text(
        "from abstractruntime.core.spec import WorkflowSpec\n"
        "from abstractruntime.core.models import StepPlan\n"
        "def n(run, ctx):\n    return StepPlan(node_id='n', complete_output={'x': 1})\n"
        "workflow = WorkflowSpec('bug', 'n', {'n': n})\n"
        "effect_handlers = {'not_an_effect_type': print}\n")
    r = cli("run", str(path))
    assert r.exit_code == 1
    line = one_error_line(r.stderr)
    assert "ValueError" in line and "-v" in line
    r = cli("-v", "run", str(path))
    assert r.exit_code == 1 and "Traceback" in r.stderr


def test_a_workflow_no_longer_registered_is_4_naming_the_ways(cli, wf: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cli("run", str(wf / "approval.py"), "--run-id", "m1")
    moved = wf / "moved.py"
    (wf / "approval.py").rename(moved)
    # Moved within the registry: found again by its workflow id and sha256.
    assert cli("resume", "m1", "--current", "--json").exit_code == 5
    monkeypatch.setenv("ABSTRACTRUNTIME_WORKFLOWS", str(tmp_path / "nothing-here"))
    r = cli("resume", "m1", "--current", "--answer", "yes")
    assert r.exit_code == 4
    line = one_error_line(r.stderr)
    assert "not registered" in line and "--workflow FILE" in line and "[tool.abstractruntime]" in line
    r = cli("resume", "m1", "--current", "--answer", "yes", "--workflow", str(moved))
    assert r.exit_code == 0, r.stderr
