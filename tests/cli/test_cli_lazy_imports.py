"""What a short command loads: rich only to draw on a terminal, asyncio only for async work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EVENT_WORKFLOW = '''\
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

def wait(run, ctx):
    return StepPlan("wait", next_node="done", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k:1"},
                                                            result_key="event"))

def done(run, ctx):
    return StepPlan("done", complete_output={"event": run.vars["event"]})

workflow = WorkflowSpec("lazy_event", entry_node="wait", nodes={"wait": wait, "done": done})
'''

# Runs one command in this process and reports (on stderr) which heavy modules it loaded.
PROBE = r"""
import json, sys
from abstractruntime.cli.entry import run
code = run(sys.argv[1:])
sys.stderr.write(json.dumps({"code": code, "loaded": sorted(
    m for m in ("rich", "asyncio", "logging", "pydantic") if m in sys.modules)}) + "\n")
"""


def _probe(tmp_path: Path, *args: str) -> dict:
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(tmp_path / "store"), "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=env, stdin=subprocess.DEVNULL)
    return json.loads(proc.stderr.strip().splitlines()[-1])


def test_help_loads_neither_rich_nor_asyncio(tmp_path: Path) -> None:
    assert _probe(tmp_path, "--help") == {"code": 0, "loaded": []}


def test_run_to_a_wait_and_emit_piped_load_neither_rich_nor_asyncio(tmp_path: Path) -> None:
    (tmp_path / "wf.py").write_text(EVENT_WORKFLOW, encoding="utf-8")
    assert _probe(tmp_path, "run", "wf.py") == {"code": 5, "loaded": []}  # 5: the run waits
    assert _probe(tmp_path, "runs", "list") == {"code": 0, "loaded": []}
    assert _probe(tmp_path, "emit", "k:1", "--payload", "{}") == {"code": 0, "loaded": []}


# Which of the package's own modules a command loaded: code-first workflows (abstractruntime.flow)
# only when the workflow file imported them, the tombstone log only for pruning and verify.
OWN_PROBE = r"""
import json, sys
from abstractruntime.cli.entry import run
code = run(sys.argv[1:])
sys.stderr.write(json.dumps({"code": code, "loaded": sorted(
    m for m in ("abstractruntime.flow", "abstractruntime.storage.tombstones", "abstractruntime.scheduler")
    if m in sys.modules)}) + "\n")
"""


def test_a_graph_workflow_run_loads_no_code_first_machinery(tmp_path: Path) -> None:
    (tmp_path / "wf.py").write_text(EVENT_WORKFLOW, encoding="utf-8")
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(tmp_path / "store"), "NO_COLOR": "1"}

    def probe(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-c", OWN_PROBE, *args], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL)
        return json.loads(proc.stderr.strip().splitlines()[-1])

    assert probe("run", "wf.py") == {"code": 5, "loaded": []}
    handle = json.loads(subprocess.run(
        [sys.executable, "-m", "abstractruntime", "runs", "list", "--json"], capture_output=True, text=True,
        timeout=120, cwd=tmp_path, env=env).stdout)
    run_id = handle[0]["run_id"] if isinstance(handle, list) else handle["runs"][0]["run_id"]
    assert probe("runs", "show", run_id) == {"code": 0, "loaded": []}
    # A code-first file imports abstractruntime.flow itself, and its typed inputs are read.
    (tmp_path / "cf.py").write_text(
        "from abstractruntime import workflow\n\n@workflow\ndef greet(ctx, name: str):\n    return {'hi': name}\n",
        encoding="utf-8")
    assert probe("run", "cf.py", "--var", "name=7") == {"code": 0, "loaded": ["abstractruntime.flow"]}


GC_PROBE = r"""
import gc, json, sys
if sys.argv[1] == "off":
    gc.disable()
from abstractruntime.cli.entry import run
code = run(["--help"])
sys.stderr.write(json.dumps({"code": code, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count() > 0}) + "\n")
"""


def test_start_up_freezes_what_the_command_line_import_made_and_leaves_the_collector_as_found(
        tmp_path: Path) -> None:
    def probe(mode: str) -> dict:
        proc = subprocess.run([sys.executable, "-c", GC_PROBE, mode], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path, stdin=subprocess.DEVNULL)
        return json.loads(proc.stderr.strip().splitlines()[-1])

    assert probe("on") == {"code": 0, "enabled": True, "frozen": True}
    assert probe("off") == {"code": 0, "enabled": False, "frozen": False}  # an embedder's choice stands
