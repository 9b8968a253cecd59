"""What a program that opens a FileStore and runs a step loads: checked in a fresh process.

Each module named here costs the import time of every program and every CLI command; it is
loaded on first use by the code that needs it. The assertions are on ``sys.modules``, never on
timings (speed lives in benchmarks/).
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import abstractruntime
from abstractruntime.core.lazy import LazyNames

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



# --- what `from abstractruntime import Runtime, FileStore` loads ------------------------------

PROBE_IMPORT = r"""
import json, sys
baseline = set(sys.modules)
exec(sys.argv[1])
print(json.dumps(sorted(set(sys.modules) - baseline)))
"""

# The standard-library modules the kernel's code uses, each loaded by the first Runtime() or
# FileStore() (or the first call that needs it), never by importing the two names.
NOT_FOR_THE_NAMES = (
    "typing", "dataclasses", "inspect", "ast", "dis", "hashlib", "_hashlib", "sqlite3", "random", "threading",
    "datetime", "json", "fcntl", "contextvars", "copy", "binascii", "bisect", "math", "weakref",
)


def _new_modules(statement: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE_IMPORT, statement], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_importing_runtime_and_file_store_loads_only_the_modules_that_define_them() -> None:
    new = _new_modules("from abstractruntime import Runtime, FileStore")
    assert [m for m in new if m.startswith("abstractruntime")] == [
        "abstractruntime", "abstractruntime.core", "abstractruntime.core.lazy", "abstractruntime.core.runtime",
        "abstractruntime.storage", "abstractruntime.storage.store"]
    assert [m for m in NOT_FOR_THE_NAMES if m in new] == []


def test_import_abstractruntime_loads_no_standard_library_module_beyond_importlib() -> None:
    new = _new_modules("import abstractruntime")
    assert new == ["abstractruntime"] or set(new) <= {"abstractruntime", "importlib"}, new


def test_the_upstream_import_paths_work_in_a_fresh_process() -> None:
    # Compat contract §1: each module path and the names callers import from it, right after start-up.
    statement = """
from abstractruntime import *
from abstractruntime.core.models import RunState, StepRecord, WaitState
from abstractruntime.core.runtime import EffectOutcome, Runtime, EffectHandler, DefaultRunContext, RunNotFoundError
from abstractruntime.storage.base import QueryableRunStore
from abstractruntime.storage.in_memory import InMemoryRunStore, InMemoryLedgerStore
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore
from abstractruntime.storage.ledger_chain import HashChainedLedgerStore, verify_ledger_chain
from abstractruntime.storage.snapshots import InMemorySnapshotStore, JsonSnapshotStore, Snapshot
from abstractruntime.storage.store import FileStore, StoreLocation, StoreNotFoundError, find_store, locate_store
from abstractruntime.scheduler import WorkflowRegistry
import abstractruntime.core.runtime as runtime_module
from abstractruntime.core.effects import EffectOutcome as Outcome
assert runtime_module.EffectOutcome is Outcome
assert EffectOutcome.completed({"a": 1}).result == {"a": 1}
"""
    assert "abstractruntime.core.effects" in _new_modules(statement)


# --- the lazily loaded paths, from a cold process ---------------------------------------------

COLD_ROUND_TRIP = r"""
import json, sys, tempfile
from abstractruntime import Runtime, FileStore
store = FileStore(tempfile.mkdtemp(), durability="none")
runtime = store.runtime()
assert isinstance(runtime, Runtime)
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec, verify_run

def ask(run, ctx):
    return StepPlan("ask", next_node="wait", effect=Effect(EffectType.ASK_USER, {"prompt": "ok?"}, result_key="r"))

def wait(run, ctx):
    until = "2000-01-01T00:00:00+00:00"
    return StepPlan("wait", next_node="done", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}))

def done(run, ctx):
    return StepPlan("done", complete_output={"r": run.vars["r"], "at": ctx.now_iso()[:2]})

flow = WorkflowSpec("cold", "ask", {"ask": ask, "wait": wait, "done": done})
run_id = runtime.start(workflow=flow, vars={"n": 1})
state = runtime.tick(workflow=flow, run_id=run_id)
assert state.status.value == "waiting", state
state = runtime.resume(workflow=flow, run_id=run_id, wait_key=state.waiting.wait_key, payload={"answer": "y"})
assert state.status.value == "completed" and state.output == {"r": {"answer": "y"}, "at": "20"}, state
again = FileStore(store.root).runtime()  # a second store and runtime over the same files
assert again.get_state(run_id).output == state.output
report = verify_run(store.root, run_id)
assert report.ok, report
print(json.dumps({"records": len(runtime.get_ledger(run_id))}))
"""


TYPE_HINTS = r"""
import tempfile, typing
from abstractruntime import Runtime, FileStore
FileStore(tempfile.mkdtemp(), durability="none").runtime()
hints = typing.get_type_hints(Runtime.tick)
assert hints["return"].__name__ == "RunState" and hints["max_steps"] is int, hints
assert "segment_bytes" in typing.get_type_hints(FileStore.__init__)
from abstractruntime.storage.store import *  # noqa: F403
assert callable(locate_store) and StoreLocation.__name__ == "StoreLocation"  # noqa: F405
"""


PATCHED_BEFORE_THE_FIRST_RUNTIME = r"""
import abstractruntime.core.runtime as runtime_module
from abstractruntime import InMemoryLedgerStore, InMemoryRunStore, Runtime
seen = []
real = runtime_module.validate_id
runtime_module.validate_id = lambda value, what: seen.append(value) or real(value, what)
runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
from abstractruntime import StepPlan, WorkflowSpec
flow = WorkflowSpec("p", "a", {"a": lambda run, ctx: StepPlan("a", complete_output={})})
runtime.start(workflow=flow, run_id="r1")
assert seen == ["r1"], seen
"""


def test_a_name_replaced_before_the_first_runtime_stays_replaced() -> None:
    proc = subprocess.run([sys.executable, "-c", PATCHED_BEFORE_THE_FIRST_RUNTIME], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_annotations_resolve_once_a_runtime_exists_and_star_import_gives_the_public_names() -> None:
    proc = subprocess.run([sys.executable, "-c", TYPE_HINTS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_start_tick_resume_and_verify_work_right_after_the_bare_import() -> None:
    proc = subprocess.run([sys.executable, "-c", COLD_ROUND_TRIP], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["records"] >= 5


# A collaborator that cannot be imported (a broken install): sys.modules[name] = None makes
# importing it raise ImportError, as a missing file would.
BROKEN_COLLABORATOR = r"""
import json, sys, tempfile
from abstractruntime import Runtime, FileStore
import abstractruntime.core.runtime as runtime_module
import abstractruntime.storage.store as store_module
out = {}
sys.modules["abstractruntime.core.drive"] = None
sys.modules["abstractruntime.core.recovery"] = None
sys.modules["abstractruntime.storage.json_files"] = None
for name, make in (("store", lambda: FileStore(tempfile.mkdtemp())),
                   ("runtime", lambda: Runtime(run_store=None, ledger_store=None))):
    for attempt in (1, 2):  # the second attempt fails the same way: nothing half-bound
        try:
            make()
            out[f"{name}{attempt}"] = "made"
        except ImportError as exc:
            out[f"{name}{attempt}"] = f"{type(exc).__name__}: {exc}"
out["bound"] = sorted(n for n in ("canonical_json", "open_run", "RunState", "Redactor") if n in vars(runtime_module))
out["store_bound"] = sorted(n for n in ("check_durability", "ensure_dir") if n in vars(store_module))
try:
    runtime_module.drive_sync
except ImportError as exc:
    out["attribute"] = type(exc).__name__
# A name from a module that does load is still handed out (what upstream code imports from here).
out["outcome"] = runtime_module.EffectOutcome.completed({"a": 1}).result
from abstractruntime.storage.store import STORE_ENV  # what the command line reads to report an error
out["env"] = STORE_ENV
try:
    runtime_module.no_such_name
except AttributeError as exc:
    out["missing"] = str(exc)
del sys.modules["abstractruntime.core.recovery"], sys.modules["abstractruntime.storage.json_files"]
store = FileStore(tempfile.mkdtemp(), durability="none")  # mended: both load now
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec
flow = WorkflowSpec("mended", "a", {"a": lambda run, ctx: StepPlan("a", complete_output={"ok": True})})
runtime = store.runtime()  # reading needs no drive: made
for attempt in (1, 2):  # starting or advancing a run does: it fails the same way twice
    try:
        runtime.start(workflow=flow)
        out[f"tick{attempt}"] = "started"
    except ImportError as exc:
        out[f"tick{attempt}"] = f"{type(exc).__name__}: {exc}"
out["advance_bound"] = sorted(n for n in ("advance_steps", "drive_sync", "RegisteredHandler", "check_budget")
                              if n in vars(runtime_module))
out["read"] = runtime.run_exists("no-such-run")
del sys.modules["abstractruntime.core.drive"]
out["state"] = runtime.tick(workflow=flow, run_id=runtime.start(workflow=flow)).status.value
print(json.dumps(out))
"""


def test_a_collaborator_that_fails_to_import_binds_nothing_and_fails_the_same_way_again() -> None:
    proc = subprocess.run([sys.executable, "-c", BROKEN_COLLABORATOR], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["store1"] == out["store2"] == \
        "ModuleNotFoundError: import of abstractruntime.storage.json_files halted; None in sys.modules"
    assert out["runtime1"] == out["runtime2"] == \
        "ModuleNotFoundError: import of abstractruntime.core.recovery halted; None in sys.modules"
    assert out["tick1"] == out["tick2"] == \
        "ModuleNotFoundError: import of abstractruntime.core.drive halted; None in sys.modules"
    assert out["advance_bound"] == [] and out["read"] is False
    assert out["bound"] == [] and out["store_bound"] == []
    assert out["attribute"] == "ModuleNotFoundError"
    assert out["outcome"] == {"a": 1} and out["env"] == "ABSTRACTRUNTIME_STORE"
    assert out["missing"] == "module 'abstractruntime.core.runtime' has no attribute 'no_such_name'"
    assert out["state"] == "completed"


BROKEN_CLI = r"""
import sys
sys.modules["abstractruntime.storage.json_files"] = None
from abstractruntime.cli.entry import run
sys.exit(run(sys.argv[1:]))
"""


def test_the_command_line_reports_a_collaborator_that_fails_to_import_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    proc = subprocess.run([sys.executable, "-c", BROKEN_CLI, "--store", str(tmp_path / "s"), "runs", "list"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "abstractruntime.storage.json_files" in lines[0] and "Traceback" not in proc.stderr


# --- type checkers see what the lazy tables bind ----------------------------------------------

def _lazy_modules() -> list[Path]:
    root = Path(abstractruntime.__file__).resolve().parent
    return [root / "core" / "runtime.py", root / "storage" / "store.py"]


@pytest.mark.parametrize("path", _lazy_modules(), ids=lambda p: p.name)
def test_the_type_checking_block_imports_what_the_lazy_table_binds(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen: dict[str, set[str]] = {}
    for node in block.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                seen.setdefault(alias.name, set())
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names = seen.setdefault(module, set())
            names.update(alias.name for alias in node.names)
    module = importlib.import_module(
        "abstractruntime." + str(path.relative_to(path.parents[1])).removesuffix(".py").replace("/", "."))
    table: dict[str, set[str]] = {}
    for lazy in (value for value in vars(module).values() if isinstance(value, LazyNames)):
        for name, names in lazy.table.items():
            assert name not in table, f"{name} is in two lazy tables"
            table[name] = set(names)
    # Only the PostgreSQL backend (an extra) is left out of the table: open_store imports it when asked.
    seen.pop(".postgres.store", None)
    assert seen == table


def test_importtime_reports_the_modules_a_lazy_table_loads() -> None:
    """Profiling a command with ``python -X importtime`` sees what the first runtime imports."""
    statement = "import tempfile; from abstractruntime import FileStore; FileStore(tempfile.mkdtemp()).runtime()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    reported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert {"abstractruntime.core.recovery", "abstractruntime.storage.json_files", "dataclasses"} <= reported


@pytest.mark.parametrize(("name", "package", "absolute"), [
    ("inspect", "abstractruntime.core", "inspect"), (".drive", "abstractruntime.core", "abstractruntime.core.drive"),
    ("..core.errors", "abstractruntime.storage", "abstractruntime.core.errors"),
    ("..", "abstractruntime.storage", "abstractruntime"),
])
def test_relative_names_of_a_lazy_table_resolve_against_its_package(name: str, package: str, absolute: str) -> None:
    from abstractruntime.core.lazy import _absolute

    assert _absolute(name, package) == absolute


def test_a_relative_name_above_the_top_package_is_an_import_error() -> None:
    from abstractruntime.core.lazy import _absolute

    with pytest.raises(ImportError):
        _absolute("...x", "abstractruntime.core")


def test_every_runtime_function_that_uses_an_advancing_name_loads_that_table_first() -> None:
    """core/runtime.py binds the names of ``_ADVANCE`` on first use: a function (or method) using
    one must call ``_ADVANCE.load()`` before, else a process that has only read runs would meet a
    ``NameError`` there."""
    import abstractruntime.core.runtime as runtime_module

    path = Path(runtime_module.__file__)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    advancing = runtime_module._ADVANCE.names
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    def evaluated(node: ast.AST) -> list[ast.Name]:
        """The names ``node`` evaluates when it runs (annotations are not: the module has
        ``from __future__ import annotations``)."""
        if isinstance(node, ast.AnnAssign):
            return [*evaluated(node.target), *(evaluated(node.value) if node.value else [])]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return []  # a nested function is checked on its own
        found = [node] if isinstance(node, ast.Name) else []
        for child in ast.iter_child_nodes(node):
            found += evaluated(child)
        return found

    missing = []
    for fn in functions:
        used = [n for st in fn.body for n in evaluated(st) if n.id in advancing]
        if not used or fn.name == "_registered":  # called only once the table has been loaded
            continue
        loads = [n for n in ast.walk(fn) if isinstance(n, ast.Call) and ast.unparse(n.func) == "_ADVANCE.load"]
        first_use = min(n.lineno for n in used)
        if not loads or min(n.lineno for n in loads) > first_use:
            missing.append(fn.name)
    assert missing == []
    assert len(functions) > 20 and advancing >= {"drive_sync", "advance_steps", "RegisteredHandler"}
