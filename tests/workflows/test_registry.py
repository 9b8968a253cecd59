"""The workflow registry (abstractruntime.registry): ids read from files without importing them,
and the places an operator registers files: explicit entries, $ABSTRACTRUNTIME_WORKFLOWS and
``[tool.abstractruntime]`` in the nearest pyproject.toml."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from abstractruntime.core.errors import WorkflowDriftError, WorkflowLoadError, WorkflowNotRegisteredError
from abstractruntime.registry import WORKFLOWS_ENV, WorkflowFileRegistry, declared_ids

# Writes a marker when imported: the registry must never import a file it scans.
TRAP = '''
import os
from pathlib import Path
Path(os.environ["TRAP_MARKER"]).write_text("imported")
'''


def _flow(workflow_id: str) -> str:
    return (f"from abstractruntime import StepPlan, WorkflowSpec\n"
            f"workflow = WorkflowSpec({workflow_id!r}, 'a', {{'a': lambda run, ctx: StepPlan('a', complete_output={{}})}})\n")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_outside_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(WORKFLOWS_ENV, raising=False)
    monkeypatch.setenv("TRAP_MARKER", str(tmp_path / "trap-marker"))
    monkeypatch.chdir(tmp_path)


def test_ids_are_read_by_parsing_never_by_importing(tmp_path: Path) -> None:
    source = TRAP + '''
from abstractruntime import WorkflowSpec
import abstractruntime as ar

first = WorkflowSpec("first", "a", {})
second = ar.WorkflowSpec(workflow_id="second", entry_node="a", nodes={})
dynamic = WorkflowSpec(NAME, "a", {})          # not a literal: not an id

@workflow("code-first")
def flow(ctx):
    return None

@ar.workflow(workflow_id="code-first-2")
async def flow2(ctx):
    return None

def plain(ctx):
    return None

third = workflow("code-first-3")(plain)        # the decorator called, not written with @
fourth = ar.workflow(plain)                    # no id: the function's name
'''
    assert declared_ids(source, "file_stem") == ("first", "second", "code-first", "code-first-2", "code-first-3",
                                                 "plain")
    assert declared_ids("x = 1\n", "helper") == ("helper",)          # the file name is the fallback
    assert declared_ids("def broken(:\n", "broken_file") == ("broken_file",)
    path = _write(tmp_path / "flows" / "many.py", source)
    registry = WorkflowFileRegistry([str(path.parent)])
    assert [f.path for f in registry.candidates("second")] == [path]
    assert not (tmp_path / "trap-marker").exists()


def test_entries_are_files_directories_and_globs(tmp_path: Path) -> None:
    a = _write(tmp_path / "flows" / "a.py", _flow("a"))
    _write(tmp_path / "flows" / "_private.py", _flow("private"))     # a helper: not listed from a folder
    _write(tmp_path / "flows" / "notes.txt", "not python")
    deep = _write(tmp_path / "flows" / "sub" / "deep.py", _flow("deep"))
    single = _write(tmp_path / "one" / "single.py", _flow("single"))
    registry = WorkflowFileRegistry(["flows", str(single), str(tmp_path / "flows" / "**" / "*.py")])
    assert registry.ids() == {"a": [a], "deep": [deep], "single": [single]}
    assert WorkflowFileRegistry(["flows"]).ids() == {"a": [a]}     # a folder is not searched recursively
    assert WorkflowFileRegistry([str(tmp_path / "missing")]).ids() == {}


def test_the_store_is_never_part_of_the_registry(tmp_path: Path) -> None:
    store = tmp_path / "project" / ".abstractruntime"
    _write(store / "runs" / "x" / "planted.py", _flow("job"))
    real = _write(tmp_path / "project" / "job.py", _flow("job"))
    registry = WorkflowFileRegistry([str(tmp_path / "project" / "**" / "*.py")], exclude=[store])
    assert [f.path for f in registry.candidates("job")] == [real]


def test_env_var_lists_dirs_globs_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _write(tmp_path / "d" / "one.py", _flow("one"))
    g = _write(tmp_path / "g" / "two.py", _flow("two"))
    f = _write(tmp_path / "f" / "three.py", _flow("three"))
    monkeypatch.setenv(WORKFLOWS_ENV, os.pathsep.join([str(d.parent), str(tmp_path / "g" / "*.py"), str(f), ""]))
    assert WorkflowFileRegistry.configured().ids() == {"one": [d], "two": [g], "three": [f]}


def test_pyproject_in_a_parent_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    flow = _write(project / "src" / "flows" / "deploy.py", _flow("deploy"))
    _write(project / "pyproject.toml", '[project]\nname = "p"\n\n[tool.abstractruntime]\n'
                                       'workflows = ["src/flows"]  # relative to this file\n')
    # A nearer pyproject.toml without the table does not hide the one that has it.
    _write(project / "pkg" / "pyproject.toml", '[project]\nname = "inner"\n')
    deeper = project / "pkg" / "deeper"
    deeper.mkdir(parents=True)
    monkeypatch.chdir(deeper)
    registry = WorkflowFileRegistry.configured()
    assert registry.ids() == {"deploy": [flow]}
    assert str(project / "pyproject.toml") in registry.describe()
    # Every source adds to the others.
    extra = _write(tmp_path / "extra" / "more.py", _flow("more"))
    assert set(WorkflowFileRegistry.configured([str(extra)]).ids()) == {"deploy", "more"}


def test_a_bad_pyproject_table_is_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path / "pyproject.toml", "[tool.abstractruntime]\nworkflows = 3\n")
    with pytest.raises(WorkflowLoadError, match=r"pyproject.toml.*workflows"):
        WorkflowFileRegistry.configured().ids()
    _write(tmp_path / "pyproject.toml", "[tool.abstractruntime\n")
    with pytest.raises(WorkflowLoadError, match="pyproject.toml"):
        WorkflowFileRegistry.configured().ids()


def test_a_pyproject_anyone_could_have_written_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"          # think /tmp: the walk upward passes through it
    _write(shared / "evil" / "job.py", _flow("job"))
    planted = _write(shared / "pyproject.toml", '[tool.abstractruntime]\nworkflows = ["evil"]\n')
    work = shared / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    planted.chmod(0o666)
    with pytest.raises(WorkflowLoadError, match="not trusted"):
        WorkflowFileRegistry.configured().ids()
    planted.chmod(0o644)
    shared.chmod(0o1777)                  # a directory anyone can write to, like /tmp
    try:
        with pytest.raises(WorkflowLoadError, match="not trusted"):
            WorkflowFileRegistry.configured().ids()
    finally:
        shared.chmod(0o755)
    assert set(WorkflowFileRegistry.configured().ids()) == {"job"}   # the owner's own project


def test_locate_by_id_and_sha256(tmp_path: Path) -> None:
    v1 = _write(tmp_path / "v1" / "deploy.py", _flow("deploy"))
    v2 = _write(tmp_path / "v2" / "deploy.py", _flow("deploy") + "# v2\n")
    sha1, sha2 = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (v1, v2))
    both = WorkflowFileRegistry([str(v1.parent), str(v2.parent)])
    # The recorded hash picks the file among the registered ones.
    assert both.locate("deploy", sha1).path == v1
    assert both.locate("deploy", sha2).path == v2
    with pytest.raises(WorkflowDriftError, match="nothing of it was imported"):
        both.locate("deploy", "0" * 64)
    with pytest.raises(WorkflowLoadError, match="--workflow FILE"):
        both.locate("deploy", "0" * 64, allow_drift=True)     # which of two changed files? the operator says
    with pytest.raises(WorkflowLoadError, match="--workflow FILE"):
        both.locate("deploy", None)
    one = WorkflowFileRegistry([str(v1.parent)])
    with pytest.raises(WorkflowDriftError) as info:
        one.locate("deploy", sha2)
    assert sha1 in str(info.value) and sha2 in str(info.value)
    assert one.locate("deploy", sha2, allow_drift=True).path == v1
    assert one.locate("deploy", None).path == v1           # a run that recorded no hash


def test_an_unknown_id_names_the_three_ways(tmp_path: Path) -> None:
    with pytest.raises(WorkflowNotRegisteredError) as info:
        WorkflowFileRegistry([]).locate("ghost", "0" * 64)
    message = str(info.value)
    assert "\n" not in message and "'ghost'" in message
    for way in ("--workflow FILE", "--workflows", "$ABSTRACTRUNTIME_WORKFLOWS", "[tool.abstractruntime]"):
        assert way in message
    assert info.value.code == "workflow_not_registered"


def test_pyproject_is_read_with_tomli_where_the_standard_library_has_no_tomllib(tmp_path: Path) -> None:
    # Python 3.10 has no tomllib: the package depends on tomli there (pyproject.toml), and the
    # reader uses it. A child interpreter without tomllib stands for 3.10.
    import importlib.metadata
    import subprocess
    import sys

    assert "tomli>=2.0; python_version < \"3.11\"" in (importlib.metadata.requires("abstractruntime") or [])
    _write(tmp_path / "pyproject.toml", '[tool.abstractruntime]\nworkflows = ["flows"]\n')
    code = (
        "import sys\n"
        "class NoTomllib:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tomllib':\n"
        "            raise ModuleNotFoundError(\"No module named 'tomllib'\", name=name)\n"
        "sys.meta_path.insert(0, NoTomllib())\n"
        "from pathlib import Path\n"
        "from abstractruntime.registry import pyproject_entries\n"
        "found, entries = pyproject_entries(Path(sys.argv[1]))\n"
        "print(entries, 'tomllib' in sys.modules, 'tomli' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['flows'] False True"
