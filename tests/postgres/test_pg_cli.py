"""The command line against PostgreSQL: the same commands as on a folder, credentials never shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "abstractruntime")
APPROVAL = REPO / "sample_runs" / "workflows" / "approval.py"


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
    return subprocess.run([CLI, "--store", url, "--no-input", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=env)


def test_run_resume_list_show_verify_and_report_on_postgresql(database_url: str, tmp_path: Path) -> None:
    url = database_url
    started = _cli(url, "run", str(APPROVAL), "--run-id", "pg1", "--var", "service=billing")
    assert started.returncode == 5, started.stderr
    handle = started.stdout.strip()
    assert handle.startswith("pg1@w")
    done = _cli(url, "resume", handle, "--answer", "yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"
    again = _cli(url, "resume", handle, "--answer", "yes")
    assert again.returncode == 1 and "already answered" in again.stderr
    listed = json.loads(_cli(url, "runs", "list", "--json").stdout)
    assert [r["run_id"] for r in listed] == ["pg1"]
    shown = json.loads(_cli(url, "runs", "show", "pg1", "--at", "2", "--json").stdout)
    assert shown["ledger"]["seq"] == 2
    assert _cli(url, "ledger", "show", "pg1", "--jsonl").stdout.count("\n") >= 5
    verified = _cli(url, "verify", "pg1", "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True
    assert _cli(url, "verify", "--all").returncode == 0
    page = tmp_path / "pg1.html"
    assert _cli(url, "report", "pg1", "-o", str(page)).returncode == 0 and page.stat().st_size > 1000


def test_a_password_in_the_url_is_never_printed(database_url: str) -> None:
    url = database_url
    parts = urlsplit(url)
    secret = "Pa55-w0rd-never-shown"
    wrong = urlunsplit((parts.scheme, f"nobody:{secret}@{parts.hostname}:{parts.port}", parts.path, "", ""))
    for args in (("runs", "list"), ("runs", "list", "--json")):
        result = _cli(wrong, *args)
        assert result.returncode != 0
        assert secret not in result.stdout + result.stderr


def test_store_copy_moves_runs_to_postgresql_and_back(database_url: str, tmp_path: Path) -> None:
    folder, back = tmp_path / "runs", tmp_path / "back"
    url = database_url
    started = _cli(str(folder), "run", str(APPROVAL), "--run-id", "f1", "--var", "service=billing")
    assert started.returncode == 5, started.stderr

    copied = _cli(str(folder), "store", "copy", "--to", url, "--json")
    assert copied.returncode == 0, copied.stderr
    assert json.loads(copied.stdout)["copied"] == ["f1"]
    # The copied run goes on in PostgreSQL, then comes back to another folder and verifies there.
    assert _cli(url, "resume", started.stdout.strip(), "--answer", "yes").returncode == 0
    assert _cli(url, "store", "copy", "--to", str(back)).stdout.split() == ["f1"]
    assert json.loads(_cli(str(back), "runs", "show", "f1", "--json").stdout)["run"]["status"] == "completed"
    assert _cli(str(back), "verify", "f1").returncode == 0

    again = _cli(str(folder), "store", "copy", "--to", url)  # the destination holds f1: refused
    assert again.returncode == 1 and "already holds" in again.stderr and "Traceback" not in again.stderr
    assert json.loads(_cli(url, "runs", "show", "f1", "--json").stdout)["run"]["status"] == "completed"
