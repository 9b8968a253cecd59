"""The kernel imports only the standard library, and the public namespace is curated."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import abstractruntime

PACKAGE = Path(abstractruntime.__file__).resolve().parent
KERNEL_PACKAGES = ["core", "storage", "scheduler", "identity"]
# Optional extras a kernel module may import lazily (inside a function), never at import time.
LAZY_EXTRAS = {"cryptography", "croniter"}

# Compat contract §1: what upstream 0.0.1 callers import from the top level.
UPSTREAM_TOP_LEVEL = """
Effect EffectType Runtime RunState RunStatus StepPlan WaitReason WorkflowSpec InMemoryRunStore InMemoryLedgerStore
JsonlLedgerStore ActorFingerprint Artifact ArtifactMetadata ArtifactStore InMemoryArtifactStore FileArtifactStore
artifact_ref is_artifact_ref get_artifact_id resolve_artifact compute_artifact_id DefaultEffectPolicy RetryPolicy
NoRetryPolicy compute_idempotency_key Scheduler SchedulerStats WorkflowRegistry ScheduledRuntime
create_scheduled_runtime WaitState QueryableRunStore JsonFileRunStore HashChainedLedgerStore verify_ledger_chain
Snapshot SnapshotStore InMemorySnapshotStore JsonSnapshotStore EffectPolicy
""".split()

PROBE = r"""
import importlib, json, sys
baseline = set(sys.modules)
for name in sys.argv[1:]:
    if name != "--all":
        importlib.import_module(name)
if "--all" in sys.argv:
    import abstractruntime
    for attr in abstractruntime.__all__:
        getattr(abstractruntime, attr)
new = sorted(set(sys.modules) - baseline)
third_party = sorted({m.split(".")[0] for m in new}
                     - set(sys.stdlib_module_names) - {"abstractruntime"})
print(json.dumps({"new": new, "third_party": third_party}))
"""


def _imported_by(*modules: str) -> dict[str, list[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_import_abstractruntime_loads_only_the_standard_library() -> None:
    found = _imported_by("abstractruntime")
    assert found["third_party"] == []
    assert "abstractruntime" in found["new"]
    # Lazy: the top-level import does not even load the runtime.
    assert "abstractruntime.core.runtime" not in found["new"]


SYNC_RUN = r"""
import sys, tempfile
from abstractruntime import FileStore, StepPlan, WorkflowSpec
flow = WorkflowSpec("sync", "a", {"a": lambda run, ctx: StepPlan("a", complete_output={"ok": True})})
runtime = FileStore(tempfile.mkdtemp()).runtime()
run_id = runtime.start(workflow=flow)
assert runtime.tick(workflow=flow, run_id=run_id).output == {"ok": True}
print(sorted(m for m in ("asyncio", "ssl", "concurrent.futures") if m in sys.modules))
print(sorted(m for m in ("logging", "uuid", "platform", "base64") if m in sys.modules))
"""


def test_a_synchronous_program_never_loads_asyncio() -> None:
    # asyncio with ssl and concurrent.futures would be a third of the import time of a CLI call.
    proc = subprocess.run([sys.executable, "-c", SYNC_RUN], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "[]"


def test_a_run_without_messages_never_loads_logging_or_uuid() -> None:
    # Loaded on first use: a logger on its first message, UUID text is written by core.ids.
    proc = subprocess.run([sys.executable, "-c", SYNC_RUN], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1] == "[]"


@pytest.mark.parametrize("module", [f"abstractruntime.{p}" for p in KERNEL_PACKAGES])
def test_kernel_packages_load_only_the_standard_library(module: str) -> None:
    assert _imported_by(module)["third_party"] == []


def test_every_public_name_loads_only_the_standard_library() -> None:
    found = _imported_by("abstractruntime", "--all")
    assert found["third_party"] == [], found["third_party"]


def _kernel_sources() -> list[Path]:
    return sorted(p for pkg in KERNEL_PACKAGES for p in (PACKAGE / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", _kernel_sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_kernel_source_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    # Imports under `if TYPE_CHECKING:` / try at module level count as module level too.
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top_level.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            root = name.split(".")[0]
            if root in sys.stdlib_module_names or root == "abstractruntime":
                continue
            assert root in LAZY_EXTRAS and id(node) not in top_level, (
                f"{path.relative_to(PACKAGE)}:{node.lineno} imports {name}")


def test_all_is_curated() -> None:
    names = abstractruntime.__all__
    assert len(names) == len(set(names))
    assert not [n for n in names if n.startswith("_") and n != "__version__"]
    missing = sorted(set(UPSTREAM_TOP_LEVEL) - set(names))
    assert missing == []
    for name in names:
        assert getattr(abstractruntime, name) is not None, name
    assert isinstance(abstractruntime.__version__, str) and abstractruntime.__version__
    assert set(names) <= set(dir(abstractruntime))
    with pytest.raises(AttributeError):
        abstractruntime.definitely_not_exported  # noqa: B018


def test_star_import() -> None:
    namespace: dict[str, object] = {}
    exec("from abstractruntime import *", namespace)
    assert set(UPSTREAM_TOP_LEVEL) <= set(namespace)


def test_public_names_are_the_submodule_objects() -> None:
    from abstractruntime.core.models import RunState
    from abstractruntime.core.runtime import Runtime
    from abstractruntime.storage.json_files import JsonlLedgerStore

    assert abstractruntime.RunState is RunState
    assert abstractruntime.Runtime is Runtime
    assert abstractruntime.JsonlLedgerStore is JsonlLedgerStore


def test_py_typed_marker() -> None:
    assert (PACKAGE / "py.typed").exists()


def test_type_checkers_see_every_public_name_where_it_loads_from() -> None:
    # The names load lazily (__getattr__), which a type checker cannot follow: the TYPE_CHECKING
    # block imports each one from the module the lazy table names, so `Runtime` is not `Any`.
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen = {alias.name: "abstractruntime." + str(node.module)
            for node in block.body if isinstance(node, ast.ImportFrom) and node.level == 1 for alias in node.names}
    assert seen == abstractruntime._EXPORTS
