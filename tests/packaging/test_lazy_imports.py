"""What a program that opens a FileStore and runs a step loads: checked in a fresh process.

Each module named here costs the import time of every program and every CLI command; it is
loaded on first use by the code that needs it. The assertions are on ``sys.modules``, never on
timings (speed lives in benchmarks/).
"""

from __future__ import annotations

import json
import subprocess
import sys

ONE_STEP = r"""
import json, sys, tempfile
from abstractruntime import Runtime, FileStore
after_import = set(sys.modules)
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec
def ask(run, ctx):
    return StepPlan("ask", next_node="done", effect=Effect(EffectType.ASK_USER, {"prompt": "ok?"}, result_key="r"))
def done(run, ctx):
    return StepPlan("done", complete_output={"r": run.vars["r"]})
flow = WorkflowSpec("lazy", "ask", {"ask": ask, "done": done})
runtime = FileStore(tempfile.mkdtemp()).runtime()
run_id = runtime.start(workflow=flow)
state = runtime.tick(workflow=flow, run_id=run_id)
state = runtime.resume(workflow=flow, run_id=run_id, wait_key=state.waiting.wait_key, payload={"answer": "y"})
assert state.output == {"r": {"answer": "y"}}, state.output
print(json.dumps({"import": sorted(after_import), "run": sorted(sys.modules)}))
"""

# Loaded by neither the import nor a run of a few steps: pruning and its tombstone log, the
# verifier, archives, signatures, connection strings, the PostgreSQL backend, the scheduler.
NEVER_FOR_A_STEP = (
    "abstractruntime.storage.tombstones", "abstractruntime.storage.prune", "abstractruntime.storage.verify",
    "abstractruntime.storage.archive", "abstractruntime.storage.signing", "abstractruntime.storage.dsn",
    "abstractruntime.storage.postgres", "abstractruntime.scheduler", "abstractruntime.storage.reindex",
    "asyncio", "logging", "uuid", "ssl",
)


def _loaded() -> dict[str, list[str]]:
    proc = subprocess.run([sys.executable, "-c", ONE_STEP], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_step_on_a_file_store_loads_none_of_the_modules_it_does_not_use() -> None:
    loaded = _loaded()
    assert [m for m in NEVER_FOR_A_STEP if m in loaded["run"]] == []

