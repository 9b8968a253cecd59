"""Code is located by the operator, never by data: a registry maps workflow ids to files.

Every attack here writes only what a user with write access to the store can write (a run
directory, a checkpoint, a snapshot file); the operator's commands run as real subprocesses of
the installed ``abstractruntime`` command. The attacker's file writes a marker when imported,
so "not imported" is checked, not assumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from abstractruntime.storage.verify import verify_run

CLI = str(Path(sys.executable).parent / "abstractruntime")

GOOD = textwrap.dedent('''
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec
    workflow = WorkflowSpec("job", "wait", {
        "wait": lambda run, ctx: StepPlan("wait", next_node="done", effect=Effect(
            EffectType.ASK_USER, {"prompt": "go?"}, "a")),
        "done": lambda run, ctx: StepPlan("done", complete_output={"ok": True}),
    })
''')

# The attacker's code: writes the marker whenever it is imported with EVIL_MARKER set (the
# operator's environment in these tests); the attacker forges runs without it.
EVIL = textwrap.dedent('''
    import os
    from pathlib import Path
    if os.environ.get("EVIL_MARKER"):
        Path(os.environ["EVIL_MARKER"]).write_text("imported")
    from abstractruntime import StepPlan, WorkflowSpec
    workflow = WorkflowSpec(WORKFLOW_ID, "wait", {"wait": lambda run, ctx: StepPlan("wait", complete_output={"evil": 1})})
''')


# The operator's file after an edit: the same workflow, plus a module-level side effect.
CHANGED = textwrap.dedent('''
    import os
    from pathlib import Path
    Path(os.environ["EVIL_MARKER"]).write_text("imported")
''') + GOOD


class Setting:
    """A store, the operator's registered workflow folder, the attacker's folder, two environments."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.store = tmp_path / "store"
        self.flows = tmp_path / "flows"
        self.attacker = tmp_path / "attacker"
        self.flows.mkdir()
        self.attacker.mkdir()
        (self.flows / "wf.py").write_text(GOOD)
        self.marker = tmp_path / "marker"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_")}
        # The operator registers flows/ and nothing else; the attacker's runs are made without a registry.
        self.operator_env = {**clean, "ABSTRACTRUNTIME_WORKFLOWS": str(self.flows), "EVIL_MARKER": str(self.marker)}
        self.attacker_env = dict(clean)

    def evil(self, workflow_id: str, name: str = "evil.py") -> Path:
        path = self.attacker / name
        path.write_text(EVIL.replace("WORKFLOW_ID", repr(workflow_id)))
        return path

    def cli(self, *args: str, attacker: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, "--store", str(self.store), "--no-input", *args], capture_output=True, text=True,
                              timeout=120, env=self.attacker_env if attacker else self.operator_env,
                              stdin=subprocess.DEVNULL, cwd=cwd or self.tmp)


@pytest.fixture
def setting(tmp_path: Path) -> Setting:
    return Setting(tmp_path)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("workflow_id", ["evil", "job"])
def test_a_forged_run_directory_never_imports_the_file_it_names(setting: Setting, workflow_id: str) -> None:
    # The attacker makes a self-consistent run of their own file (verify says ok): a start
    # record naming attacker/evil.py, its sha256 and the directory it was "started from".
    evil = setting.evil(workflow_id)
    forged = setting.cli("start", str(evil), "--run-id", "forged", attacker=True)
    assert forged.returncode == 0, forged.stderr
    assert verify_run(setting.store, "forged").ok
    assert not setting.marker.exists()
    for args in (("tick", "forged"), ("worker", "--once")):
        result = setting.cli(*args)
        assert not setting.marker.exists(), (args, result.stderr)
        assert "error: " in result.stderr, (args, result.stdout, result.stderr)
    # An unregistered id is "not registered"; a registered id with other bytes is drift.
    result = setting.cli("tick", "forged")
    expected = "not registered" if workflow_id == "evil" else "nothing of it was imported"
    assert expected in result.stderr, result.stderr


def test_a_checkpoint_naming_other_code_is_refused_and_reported(setting: Setting) -> None:
    started = setting.cli("run", str(setting.flows / "wf.py"), "--run-id", "r1")
    assert started.returncode == 5, started.stderr
    evil = setting.evil("job")
    ckpt = setting.store / "runs" / "r1" / "run.json"
    doc = json.loads(ckpt.read_text())
    doc["state"]["kernel"]["workflow"] = {"workflow_id": "job", "source": str(evil),
                                          "sha256": hashlib.sha256(evil.read_bytes()).hexdigest()}
    ckpt.write_text(json.dumps(doc))
    found = {p.type for p in verify_run(setting.store, "r1").problems}
    assert {"checkpoint_workflow_mismatch", "checkpoint_state_mismatch"} <= found
    for args in (("tick", "r1"), ("resume", "r1@w1", "--answer", "x"), ("worker", "--once")):
        result = setting.cli(*args)
        assert not setting.marker.exists(), (args, result.stderr)
    # The runtime never believed the edited checkpoint: it rebuilt the run from its ledger and
    # stored a checkpoint the ledger proves.
    assert verify_run(setting.store, "r1").ok


def test_a_snapshot_naming_other_code_is_not_forked_onto_it(setting: Setting) -> None:
    started = setting.cli("run", str(setting.flows / "wf.py"), "--run-id", "s1")
    assert started.returncode == 5, started.stderr
    snap_id = setting.cli("snapshot", "create", "s1", "--name", "before").stdout.strip()
    evil = setting.evil("job")
    path = setting.store / "snapshots" / f"{snap_id}.json"
    doc = json.loads(path.read_text())
    # The snapshot names the attacker's file (and its hash), and a source run that does not exist.
    doc["workflow"] = {"workflow_id": "job", "source": str(evil), "sha256": hashlib.sha256(evil.read_bytes()).hexdigest()}
    doc["run_id"] = doc["run_state"]["run_id"] = doc["state"]["run"]["run_id"] = "gone"
    path.write_text(json.dumps(doc))
    fork = setting.cli("snapshot", "restore", snap_id, "--fork", "--run-id", "f1")
    assert fork.returncode == 1, fork.stderr
    assert "nothing of it was imported" in fork.stderr
    assert not (setting.store / "runs" / "f1").exists()
    # The operator accepts the drift: the fork records the registered file, never the snapshot's.
    fork = setting.cli("snapshot", "restore", snap_id, "--fork", "--run-id", "f2", "--allow-drift")
    assert fork.returncode == 0, fork.stderr
    recorded = json.loads(setting.cli("runs", "show", "f2", "--json").stdout)["workflow"]
    assert recorded == {"workflow_id": "job", "sha256": hashlib.sha256(GOOD.encode()).hexdigest()}
    done = setting.cli("resume", "f2", "--current", "--answer", "yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == {"ok": True}
    assert not setting.marker.exists()


def test_a_changed_file_is_refused_before_any_of_its_code_runs(setting: Setting) -> None:
    wf = setting.flows / "wf.py"
    started = setting.cli("run", str(wf), "--run-id", "c1")
    assert started.returncode == 5, started.stderr
    old = hashlib.sha256(wf.read_bytes()).hexdigest()
    wf.write_text(CHANGED)
    new = hashlib.sha256(wf.read_bytes()).hexdigest()
    for extra in ((), ("--workflow", str(wf))):
        result = setting.cli("resume", "c1@w1", "--answer", "yes", *extra)
        assert result.returncode == 1, result.stderr
        assert not setting.marker.exists(), extra
        line, = _error_lines(result.stderr)
        assert old in line and new in line and "--allow-drift" in line and "nothing of it was imported" in line
    # The operator's explicit override still works: now the new code runs.
    result = setting.cli("resume", "c1@w1", "--answer", "yes", "--allow-drift", "--json")
    assert result.returncode == 0, result.stderr
    assert setting.marker.exists()


def test_an_unregistered_workflow_is_one_line_naming_the_three_ways(setting: Setting) -> None:
    elsewhere = setting.tmp / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "other.py").write_text(GOOD.replace('"job"', '"other"'))
    started = setting.cli("run", str(elsewhere / "other.py"), "--run-id", "u1")
    assert started.returncode == 5, started.stderr
    result = setting.cli("resume", "u1@w1", "--answer", "yes")
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for way in ("--workflow FILE", "--workflows", "$ABSTRACTRUNTIME_WORKFLOWS", "[tool.abstractruntime]"):
        assert way in lines[0]
    doc = json.loads(setting.cli("resume", "u1@w1", "--answer", "yes", "--json").stdout)
    assert doc["error"]["code"] == "workflow_not_registered" and doc["error"]["exit_code"] == 4


def test_the_operators_own_file_is_their_choice(setting: Setting) -> None:
    started = setting.cli("run", str(setting.flows / "wf.py"), "--run-id", "o1")
    assert started.returncode == 5, started.stderr
    copy = setting.tmp / "copy.py"
    copy.write_text(GOOD)  # the same bytes anywhere: the operator named it
    setting.operator_env.pop("ABSTRACTRUNTIME_WORKFLOWS")
    done = setting.cli("resume", "o1@w1", "--answer", "yes", "--workflow", str(copy))
    assert done.returncode == 0, done.stderr
