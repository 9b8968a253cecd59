"""What the everyday commands (run, runs show, resume, emit) load beyond their job, piped.

Each module named here is one a command used to load for nothing: rich (no terminal), the
LLM configuration (no --llm given to a new run), the connection-string parser (the store is a
folder), the prompt (nobody to ask), asyncio and logging. The index's fsyncs are the other
half of a short command's cost: tests/storage/test_run_index_boot.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runtime_support import ask_workflow_source

ASK = ask_workflow_source("cost_ask")

EVENT = '''\
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

def wait(run, ctx):
    return StepPlan("wait", next_node="done", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "cost:1"},
                                                            result_key="event"))

def done(run, ctx):
    return StepPlan("done", complete_output={"event": run.vars["event"]})

workflow = WorkflowSpec("cost_event", entry_node="wait", nodes={"wait": wait, "done": done})
'''

WATCHED = ("rich", "asyncio", "logging", "pydantic", "abstractruntime.llm_config", "abstractruntime.storage.dsn",
           "abstractruntime.cli.prompt", "abstractruntime.registry", "abstractruntime.trust")
# What only advancing a run uses (core/runtime.py's second lazy table), watched for `runs show`.
ADVANCING = ("abstractruntime.core.drive", "abstractruntime.core.effect_exec", "abstractruntime.core.stepping",
             "abstractruntime.core.answers", "abstractruntime.core.ahead", "abstractruntime.core.upgrade")
WATCHED += ADVANCING
# What continuing a run needs: the registry that finds its workflow file, the checks of the
# workflow it recorded (the LLM configuration only for a run that recorded one, or an --llm option).
CONTINUING = {"abstractruntime.registry", "abstractruntime.trust"}

PROBE = r"""
import json, sys
from abstractruntime.cli.entry import run
code = run(sys.argv[2:])
sys.stderr.write(json.dumps({"code": code, "loaded": sorted(m for m in json.loads(sys.argv[1]) if m in sys.modules)})
                 + "\n")
"""


@pytest.fixture
def probe(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "ask.py").write_text(ASK, encoding="utf-8")
    (tmp_path / "event.py").write_text(EVENT, encoding="utf-8")
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(tmp_path / "store"), "ABSTRACTRUNTIME_WORKFLOWS": str(tmp_path),
           "NO_COLOR": "1"}

    def run(*args: str) -> tuple[int, list[str], str]:
        proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(WATCHED), *args], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL)
        found = json.loads(proc.stderr.strip().splitlines()[-1])
        return found["code"], found["loaded"], proc.stdout.strip()

    return run


def test_the_everyday_commands_load_only_what_they_use(probe) -> None:  # type: ignore[no-untyped-def]
    code, loaded, handle = probe("run", "ask.py", "--no-input")
    assert (code, [m for m in loaded if m not in ADVANCING]) == (5, [])
    assert set(ADVANCING) <= set(loaded)  # the watch itself works: running a step loads them
    run_id = handle.split("@")[0]
    assert probe("runs", "show", run_id)[:2] == (0, [])
    # Reading a run runs no step: the effect execution, the stepping loop and its driver stay unloaded.
    code, loaded, _ = probe("runs", "show", run_id, "--json")
    assert (code, [m for m in loaded if m in ADVANCING]) == (0, [])
    code, loaded, _ = probe("resume", handle, "--answer", "yes")
    assert (code, [m for m in loaded if m not in CONTINUING and m not in ADVANCING]) == (0, [])
    code, loaded, _ = probe("run", "event.py")
    assert (code, [m for m in loaded if m not in ADVANCING]) == (5, [])
    code, loaded, _ = probe("emit", "cost:1", "--payload", "{}")
    assert (code, [m for m in loaded if m not in CONTINUING and m not in ADVANCING]) == (0, [])


def test_a_store_folder_named_like_a_key_value_pair_is_still_a_folder(tmp_path: Path) -> None:
    """The connection-string parser is skipped only for paths that cannot be one."""
    (tmp_path / "ask.py").write_text(ASK, encoding="utf-8")
    store = tmp_path / "a=b"
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "abstractruntime", "--store", str(store), "run", "ask.py",
                           "--no-input"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 5, proc.stderr
    assert (store / "runs").is_dir()


OPENS = r"""
import collections, json, sys
opens = collections.Counter()

def hook(event, args):
    if event == "open" and isinstance(args[0], str):
        opens[args[0]] += 1

sys.addaudithook(hook)
from abstractruntime.cli.entry import run
code = run(sys.argv[1:])
sys.stderr.write(json.dumps({"code": code, "opens": opens}) + "\n")
"""


def test_a_continuing_command_reads_the_operators_pyproject_once(tmp_path: Path) -> None:
    """The registry's entries and its upgrades setting come from one reading of pyproject.toml."""
    (tmp_path / "ask.py").write_text(ASK, encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text('[tool.abstractruntime]\nworkflows = ["ask.py"]\nupgrades = false\n',
                                             encoding="utf-8")
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(tmp_path / "store"), "NO_COLOR": "1"}
    env.pop("ABSTRACTRUNTIME_WORKFLOWS", None)

    def run(*args: str) -> tuple[int, dict[str, int], str]:
        proc = subprocess.run([sys.executable, "-c", OPENS, *args], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path, env=env, stdin=subprocess.DEVNULL)
        found = json.loads(proc.stderr.strip().splitlines()[-1])
        return found["code"], found["opens"], proc.stdout.strip()

    code, _, handle = run("run", "ask.py", "--no-input")
    assert code == 5
    code, opens, _ = run("resume", handle, "--answer", "yes")
    assert code == 0
    assert opens.get(str(tmp_path / "pyproject.toml")) == 1, opens
