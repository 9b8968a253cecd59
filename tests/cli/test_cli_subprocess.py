"""The installed `abstractruntime` command as real processes: the flows users run from a shell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from cli_support import BIN, REPO


def test_version_and_python_m(sh, tmp_path: Path) -> None:
    from abstractruntime import __version__

    r = sh("--version")
    assert r.exit_code == 0 and r.stdout == f"abstractruntime {__version__}\n"
    proc = subprocess.run([sys.executable, "-m", "abstractruntime", "--version"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == r.stdout
    proc = subprocess.run([sys.executable, "-m", "abstractruntime", "--help"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0 and "Usage: abstractruntime" in proc.stdout


def test_approval_flow_from_a_shell(sh, wf: Path) -> None:
    r = sh("run", str(wf / "approval.py"), "--var", "service=billing")
    assert r.exit_code == 5
    handle = r.stdout.strip()
    run_id = handle.split("@")[0]
    assert "Deploy billing to production? [y/n]" in r.stderr
    listed = sh("runs", "list", "--status", "waiting").stdout.splitlines()
    assert [line.split("\t")[0] for line in listed] == [run_id]
    r = sh("resume", handle, "--answer", "-", input="yes\n")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == run_id + "\n"
    r = sh("verify", run_id)
    assert r.exit_code == 0 and r.stdout.startswith(f"ok\t{run_id}\t6\t")
    doc = json.loads(sh("runs", "show", run_id, "--json").stdout)
    assert doc["run"]["output"] == {"deployed": True, "service": "billing"}


def test_store_from_environment_and_default(sh, wf: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-store"
    r = sh("run", str(wf / "tools.py"), env={"ABSTRACTRUNTIME_STORE": str(other)})
    assert r.exit_code == 0
    assert (other / "runs" / r.stdout.strip() / "run.json").exists()
    env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
    proc = subprocess.run([str(BIN), "run", str(wf / "tools.py")], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0
    assert (tmp_path / ".abstractruntime" / "runs" / proc.stdout.strip()).is_dir()


def test_locked_run_fails_or_waits(sh, store: Path, wf: Path) -> None:
    from abstractruntime.storage.fsio import RunLock

    sh("run", str(wf / "approval.py"), "--run-id", "L1")
    lock_path = store / "runs" / "L1" / ".lock"
    with RunLock(lock_path, "L1"):
        r = sh("resume", "L1", "--current", "--answer", "yes")
        assert r.exit_code == 1
        assert r.stderr.splitlines() == [r.stderr.strip()] and "locked" in r.stderr
    assert json.loads(sh("runs", "show", "L1", "--json").stdout)["run"]["status"] == "waiting"
    lock = RunLock(lock_path, "L1")
    lock.__enter__()
    timer = threading.Timer(0.5, lock.__exit__, args=(None, None, None))
    timer.start()
    try:
        r = sh("resume", "L1", "--current", "--answer", "yes", "--wait", "10")
    finally:
        timer.join()
    assert r.exit_code == 0, r.stderr


def test_worker_ticks_timers_and_stops_on_sigterm(sh, store: Path, wf: Path, tmp_path: Path) -> None:
    r = sh("run", str(wf / "timer.py"), "--var", "delay_seconds=0.5", "--run-id", "w1")
    assert r.exit_code in (0, 5)
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store)}
    proc = subprocess.Popen([str(BIN), "worker", "--interval", "0.1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = json.loads(sh("runs", "show", "w1", "--json").stdout)["run"]["status"]
            if status == "completed":
                break
            time.sleep(0.2)
        assert status == "completed"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.splitlines() == ["w1\tcompleted"]
    assert "worker stopped" in err and "Traceback" not in err


def test_worker_once_and_sigint(store: Path, tmp_path: Path) -> None:
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store)}
    proc = subprocess.run([str(BIN), "worker", "--once"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == ""
    proc = subprocess.Popen([str(BIN), "worker", "--interval", "0.1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert proc.stderr is not None
    started = proc.stderr.readline()  # printed once its signal handlers are installed
    assert "worker started" in started
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, started + err
    assert "worker stopped" in err and "Traceback" not in err


def test_ci_approval_script(tmp_path: Path, wf: Path) -> None:
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(tmp_path / "ci-store"),
           "PATH": f"{BIN.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    script = REPO / "docs" / "examples" / "ci-approval.sh"
    proc = subprocess.run(["sh", str(script), str(wf / "approval.py"), "yes"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"deployed": True, "service": "web"}
    assert "verified" in proc.stderr and "Deploy web to production? [y/n]" in proc.stderr
    # a bad answer makes the script fail (resume exits 2 under set -e)
    proc = subprocess.run(["sh", str(script), str(wf / "approval.py"), "perhaps"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "not one of the choices" in proc.stderr


def test_ctrl_c_exits_130_with_one_line(store: Path, tmp_path: Path) -> None:
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import time\n"
        "from abstractruntime.core.models import StepPlan\n"
        "from abstractruntime.core.spec import WorkflowSpec\n"
        "def wait(run, ctx):\n"
        "    print('node started', flush=True)\n"
        "    time.sleep(60)\n"
        "    return StepPlan(node_id='wait', complete_output={})\n"
        "workflow = WorkflowSpec('slow', 'wait', {'wait': wait})\n")
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store)}
    proc = subprocess.Popen([str(BIN), "run", str(slow), "--run-id", "slow1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "node started\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert err.splitlines()[-1] == ("error: interrupted: run slow1 stopped at node wait (running); "
                                    "continue with: abstractruntime tick slow1")
    # the run is as last checkpointed: still running at its node, and its ledger verifies
    r = subprocess.run([str(BIN), "runs", "show", "slow1", "--json"], capture_output=True, text=True, env=env)
    assert json.loads(r.stdout)["run"]["status"] == "running"
    r = subprocess.run([str(BIN), "verify", "slow1"], capture_output=True, text=True, env=env)
    assert r.returncode == 0


def test_bash_completion(tmp_path: Path) -> None:
    env = {**os.environ, "_ABSTRACTRUNTIME_COMPLETE": "complete_bash", "COMP_WORDS": "abstractruntime snap",
           "COMP_CWORD": "1"}
    proc = subprocess.run([str(BIN)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.split() == ["snapshot"]
