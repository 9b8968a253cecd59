"""Ctrl-C and SIGTERM in the middle of a run say where it stopped and how to go on."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pexpect

from cli_support import BIN

SLOW = '''
import os, time
from abstractruntime import StepPlan, WorkflowSpec

MARK = {mark!r}

def first(run, ctx):
    return StepPlan("first", next_node="slow")

def slow(run, ctx):
    if not os.path.exists(MARK):
        open(MARK, "w").close()
        time.sleep(60)   # interrupted here on the first attempt
    return StepPlan("slow", complete_output={{"done": True}})

workflow = WorkflowSpec("slow", entry_node="first", nodes={{"first": first, "slow": slow}})
'''


def slow_workflow(tmp_path: Path) -> tuple[Path, Path]:
    mark = tmp_path / "entered"
    path = tmp_path / "slow.py"
    path.write_text(SLOW.format(mark=str(mark)), encoding="utf-8")
    return path, mark


def wait_for(path: Path) -> None:
    for _ in range(600):
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_ctrl_c_names_the_run_and_the_command_to_continue(store: Path, tmp_path: Path, sh) -> None:
    workflow, mark = slow_workflow(tmp_path)
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store), "NO_COLOR": "1", "TERM": "dumb"}
    child = pexpect.spawn(str(BIN), ["run", str(workflow), "--run-id", "int1"], env=env, encoding="utf-8",
                          timeout=30, dimensions=(40, 200))
    wait_for(mark)
    child.sendintr()
    # The node named is the one last checkpointed (steps are committed in groups).
    child.expect(r"error: interrupted: run int1 stopped at node (first|slow) \(running\); "
                 r"continue with: abstractruntime tick int1")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    # resume is not the way on for a run stopped mid-step; it says so.
    r = sh("resume", "int1", "--current", "--answer", "x")
    assert r.exit_code == 1
    assert "continue it with: abstractruntime tick int1" in r.stderr
    r = sh("tick", "int1")
    assert r.exit_code == 0, r.stderr
    assert json.loads(sh("runs", "show", "int1", "--json").stdout)["run"]["output"] == {"done": True}


def test_sigterm_names_the_run_and_exits_143(store: Path, tmp_path: Path, sh) -> None:
    workflow, mark = slow_workflow(tmp_path)
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store), "NO_COLOR": "1"}
    proc = subprocess.Popen([str(BIN), "run", str(workflow), "--run-id", "term1"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(mark)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert out == ""
    assert re.fullmatch(r"error: terminated: run term1 stopped at node (first|slow) \(running\); "
                        r"continue with: abstractruntime tick term1", err.strip().splitlines()[-1]), err
    r = sh("tick", "term1", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["output"] == {"done": True}


def test_sigterm_with_json_reports_the_run(store: Path, tmp_path: Path) -> None:
    workflow, mark = slow_workflow(tmp_path)
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store), "NO_COLOR": "1"}
    proc = subprocess.Popen([str(BIN), "run", str(workflow), "--run-id", "term2", "--json"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(mark)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 143
    doc = json.loads(out)["error"]
    assert doc["code"] == "terminated" and doc["exit_code"] == 143 and doc["run_id"] == "term2"
    assert doc["continue_with"] == "abstractruntime tick term2"


def test_ctrl_c_at_the_prompt_says_how_to_answer_later(store: Path, wf: Path) -> None:
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store), "NO_COLOR": "1", "TERM": "dumb"}
    child = pexpect.spawn(str(BIN), ["run", str(wf / "approval.py"), "--run-id", "int2"], env=env,
                          encoding="utf-8", timeout=30, dimensions=(40, 200))
    child.expect_exact("> ")
    child.sendintr()
    child.expect_exact("interrupted: run int2 stopped at node ask (waiting); continue with: abstractruntime resume int2")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130


def test_ctrl_c_during_start_up_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # The first moments of a command import typer, rich and the commands: an interrupt there
    # must end as cleanly as one later on. The interrupt is raised exactly while typer is
    # being imported (an import hook), so the test does not depend on timing.
    import subprocess
    import sys

    code = textwrap.dedent("""
        import sys, importlib.abc
        class Interrupt(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "typer":
                    raise KeyboardInterrupt
        sys.meta_path.insert(0, Interrupt())
        from abstractruntime.cli.entry import run
        sys.exit(run(["runs", "list"]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "interrupted"
