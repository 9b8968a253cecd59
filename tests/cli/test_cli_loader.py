"""abstractruntime.loader: import a workflow file, hash it, report errors with file and line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from abstractruntime.core.errors import WorkflowLoadError
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.loader import file_sha256, load_workflow, load_workflow_file

GOOD = '''
from abstractruntime.core.models import StepPlan
from abstractruntime.core.spec import WorkflowSpec

def only(run, ctx):
    return StepPlan(node_id="only", complete_output={"ok": True})

workflow = WorkflowSpec("good", "only", {"only": only})
other = WorkflowSpec("second", "only", {"only": only})
tools = {"echo": lambda text: text}
'''


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_spec_with_absolute_source_and_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "good.py", GOOD)
    monkeypatch.chdir(tmp_path)
    loaded = load_workflow_file("good.py")
    assert isinstance(loaded.workflow, WorkflowSpec)
    assert loaded.workflow.workflow_id == "good"
    expected = hashlib.sha256(GOOD.encode()).hexdigest()
    assert loaded.sha256 == expected == file_sha256(path)
    assert loaded.workflow.source is not None
    assert loaded.workflow.source.path == str(path.resolve())
    assert loaded.workflow.source.sha256 == expected
    assert set(loaded.tools) == {"echo"}


def test_attr_and_workflow_id_select_other_specs(tmp_path: Path) -> None:
    path = write(tmp_path, "good.py", GOOD)
    assert load_workflow(path, attr="other").workflow_id == "second"
    assert load_workflow_file(path, workflow_id="second").workflow.workflow_id == "second"
    assert load_workflow_file(path, workflow_id="good").workflow.workflow_id == "good"


def test_each_load_is_a_fresh_module(tmp_path: Path) -> None:
    path = write(tmp_path, "counter.py", GOOD + "\nimport itertools\nstate = []\nstate.append(1)\n")
    first = load_workflow_file(path)
    second = load_workflow_file(path)
    assert first.module is not second.module
    assert first.module.state == [1] and second.module.state == [1]


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.py", "x = 1\n\ndef f(:\n    pass\n")
    with pytest.raises(WorkflowLoadError) as info:
        load_workflow(path)
    assert str(info.value).startswith(f"{path}:3:")
    assert "syntax error" in str(info.value)


def test_exception_during_import_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "raises.py", "a = 1\nb = 2\nraise RuntimeError('boom')\n")
    with pytest.raises(WorkflowLoadError) as info:
        load_workflow(path)
    assert str(info.value).startswith(f"{path}:3:")
    assert "RuntimeError: boom" in str(info.value)


def test_missing_workflow_attribute(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.py", "x = 1\n")
    with pytest.raises(WorkflowLoadError, match="defines no attribute 'workflow'") as info:
        load_workflow(path)
    assert str(path) in str(info.value)
    with pytest.raises(WorkflowLoadError, match="no attribute 'nope'"):
        load_workflow(write(tmp_path, "good.py", GOOD), attr="nope")


def test_attribute_that_is_not_a_spec_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "wrong.py", "import os\n\nworkflow = {'not': 'a spec'}\n")
    with pytest.raises(WorkflowLoadError) as info:
        load_workflow(path)
    assert str(info.value) == f"{path}:3: 'workflow' is a dict, not a WorkflowSpec"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WorkflowLoadError, match="not found"):
        load_workflow(tmp_path / "absent.py")
    with pytest.raises(WorkflowLoadError, match="directory"):
        load_workflow(tmp_path)


def test_workflow_can_import_a_sibling_helper(tmp_path: Path) -> None:
    write(tmp_path, "wfhelper_x1.py", "NODE = 'only'\n")
    path = write(tmp_path, "uses_helper.py", "from wfhelper_x1 import NODE\n" + GOOD)
    assert load_workflow(path).entry_node == "only"
