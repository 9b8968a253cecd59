"""Where a command that continues a run finds its code: the README's two-process flow, the
three ways an operator registers workflow files, and runs recorded before runs stopped
recording paths. Every command is a real subprocess of the installed ``abstractruntime``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cli_support import BIN, REPO

FIXTURES = REPO / "tests" / "fixtures"
README = (REPO / "README.md").read_text(encoding="utf-8")

FLOW = '''
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec
workflow = WorkflowSpec("deploy", "ask", {
    "ask": lambda run, ctx: StepPlan("ask", next_node="done", effect=Effect(
        EffectType.ASK_USER, {"prompt": "go?", "choices": ["yes", "no"], "allow_free_text": False}, "reply")),
    "done": lambda run, ctx: StepPlan("done", complete_output={"go": run.vars["reply"]["answer"]}),
})
'''


def _env(store: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_")}
    return {**clean, "ABSTRACTRUNTIME_STORE": str(store), "NO_COLOR": "1", **extra}


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_the_readme_flow_across_two_processes(tmp_path: Path) -> None:
    """`H=$(abstractruntime run ... --no-input)` then `resume "$H" --answer yes`, word for word,
    from the repository root: this repository registers its samples in its pyproject.toml."""
    block = re.search(r"```sh\n(H=\$\(abstractruntime run .*?)```", README, re.S)
    assert block, "the README's scripting example is gone"
    lines = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 2 and lines[1].startswith("abstractruntime resume")
    env = _env(tmp_path / "store", PATH=f"{BIN.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    first = subprocess.run(["bash", "-c", f'{lines[0]}; echo "$H"'], capture_output=True, text=True, cwd=REPO,
                           env=env, timeout=120)
    handle = first.stdout.strip()
    assert "@" in handle, first.stderr
    # Another process, later: it finds the code through the registry, not through the ledger.
    second = subprocess.run(["bash", "-c", f'H={handle}; {lines[1]}'], capture_output=True, text=True, cwd=REPO,
                            env=env, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "completed" in second.stderr
    recorded = json.loads(_cli("runs", "show", handle.split("@")[0], "--json", cwd=REPO, env=env).stdout)["workflow"]
    assert set(recorded) == {"workflow_id", "sha256"}   # an id and a hash: no path to import from


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: flows/deploy.py, declared in its pyproject.toml as the README shows."""
    table = re.search(r"```toml\n(\[tool\.abstractruntime\].*?)```", README, re.S)
    assert table, "the README no longer shows how a project registers its workflows"
    root = tmp_path / "project"
    (root / "flows").mkdir(parents=True)
    (root / "flows" / "deploy.py").write_text(FLOW)
    (root / "pyproject.toml").write_text('[project]\nname = "app"\n\n' + table.group(1))
    return root


def _start(project: Path, store: Path, run_id: str) -> str:
    r = _cli("run", str(project / "flows" / "deploy.py"), "--run-id", run_id, "--no-input", cwd=project,
             env=_env(store))
    assert r.returncode == 5, r.stderr
    return r.stdout.strip()


def test_a_pyproject_in_a_parent_directory_registers_the_projects_workflows(project: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    # Started from a scratch copy that is gone by the time the run resumes.
    scratch = tmp_path / "scratch" / "deploy.py"
    scratch.parent.mkdir()
    scratch.write_text(FLOW)
    r = _cli("run", str(scratch), "--run-id", "p1", "--no-input", cwd=tmp_path, env=_env(store))
    assert r.returncode == 5, r.stderr
    scratch.unlink()
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    r = _cli("-v", "resume", r.stdout.strip(), "--answer", "yes", "--json", cwd=deep, env=_env(store))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["output"] == {"go": "yes"}
    assert f"workflow deploy from {project / 'flows' / 'deploy.py'}" in r.stderr


def test_the_env_var_and_the_workflows_option_register_files(project: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    outside = tmp_path / "outside"   # no pyproject.toml here or above
    outside.mkdir()
    handles = [_start(project, store, f"e{i}") for i in range(4)]
    unregistered = _cli("resume", handles[0], "--answer", "yes", cwd=outside, env=_env(store))
    assert unregistered.returncode == 4, unregistered.stderr
    flows = str(project / "flows")
    runs = [
        (["resume", handles[0], "--answer", "yes"], _env(store, ABSTRACTRUNTIME_WORKFLOWS=flows)),
        (["--workflows", flows, "resume", handles[1], "--answer", "yes"], _env(store)),
        (["resume", handles[2], "--answer", "yes", "--workflows", str(project / "flows" / "*.py")], _env(store)),
        (["resume", handles[3], "--answer", "yes", "--workflows", "nowhere", "--workflows", flows], _env(store)),
    ]
    for args, env in runs:
        r = _cli(*args, cwd=outside, env=env)
        assert r.returncode == 0, (args, r.stderr)


def test_a_run_recorded_with_a_source_path_resumes_through_the_registry(tmp_path: Path) -> None:
    """Runs written before records stopped carrying paths: the recorded path is gone, the
    registry finds the code by the recorded id and sha256."""
    store = tmp_path / "store"
    shutil.copytree(FIXTURES / "recorded-paths", store)
    run = store / "runs" / "approval-recorded-path"
    recorded = json.loads((run / "run.json").read_text())["workflow"]
    assert recorded["source"] == "/tmp/regtest/gone/approval.py" and not Path(recorded["source"]).exists()
    outside = tmp_path / "outside"
    outside.mkdir()
    r = _cli("resume", "approval-recorded-path@w1", "--answer", "yes", cwd=outside, env=_env(store))
    assert r.returncode == 4 and "not registered" in r.stderr, r.stderr
    r = _cli("resume", "approval-recorded-path@w1", "--answer", "yes", "--json", cwd=REPO, env=_env(store))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "completed"
    assert _cli("verify", "approval-recorded-path", cwd=outside, env=_env(store)).returncode == 0


def test_a_format_1_run_resumes_through_the_registry(tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(FIXTURES / "format1" / "store", store)
    # The run names /work/main/sample_runs/workflows/approval.py; the operator's copy is elsewhere.
    flows = tmp_path / "flows"
    shutil.copytree(FIXTURES / "format1" / "workflows", flows)
    env = _env(store, ABSTRACTRUNTIME_WORKFLOWS=str(flows))
    outside = tmp_path / "outside"
    outside.mkdir()
    r = _cli("-v", "resume", "approval-waiting", "--current", "--answer", "yes", "--json", cwd=outside, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "completed"
    assert f"workflow approval from {flows / 'approval.py'}" in r.stderr
    assert _cli("verify", "approval-waiting", cwd=outside, env=env).returncode == 0
