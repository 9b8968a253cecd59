"""docs/cli.md is generated from --help; the recorded sample runs still verify."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import REPO, SAMPLES

CLEAN_RUNS = ["agent-approved", "agent-denied", "agent-flow-approved", "agent-remote", "approval-approved",
              "approval-flow-approved", "approval-flow-waiting", "approval-rejected", "approval-waiting", "event-paid",
              "timer-done", "tools-run"]


def test_cli_reference_is_up_to_date() -> None:
    from abstractruntime.cli.docgen import render

    committed = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == render(), "docs/cli.md is stale: python -m abstractruntime.cli.docgen > docs/cli.md"


def test_reference_lists_every_command_and_exit_code() -> None:
    from abstractruntime.cli.exit_codes import ERROR_EXIT_CODES
    from abstractruntime.core import errors

    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    for title in ("abstractruntime run", "abstractruntime resume", "abstractruntime snapshot restore",
                  "abstractruntime bookmark remove", "abstractruntime verify", "abstractruntime graph"):
        assert f"### `{title}`" in text
    # every error class of the library has a row in the one table
    codes = {cls.code for cls in vars(errors).values() if isinstance(cls, type) and hasattr(cls, "code")}
    assert codes <= set(ERROR_EXIT_CODES)


def test_cli_startup_does_not_import_the_kernel() -> None:
    code = ("import sys, abstractruntime.cli.main; "
            "print(sorted(m for m in sys.modules if m.startswith(('abstractruntime.core', "
            "'abstractruntime.storage', 'abstractcore', 'httpx'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.fixture
def sample_store(tmp_path: Path) -> Path:
    """A copy of the recorded store (queries build an index; the committed one has none)."""
    target = tmp_path / "samples"
    shutil.copytree(SAMPLES / "store", target)
    assert not list(target.glob("index.sqlite3*"))
    return target


def test_recorded_runs_verify(cli, sample_store: Path) -> None:
    for run_id in CLEAN_RUNS:
        r = cli("--store", str(sample_store), "verify", run_id)
        assert r.exit_code == 0, (run_id, r.stderr)
    r = cli("--store", str(sample_store), "verify", "tampered", "--json")
    assert r.exit_code == 3
    report = json.loads(r.stdout)
    assert report["ok"] is False
    assert [p["type"] for p in report["problems"]][0] == "record_hash_mismatch"
    r = cli("--store", str(sample_store), "verify", "--all")
    assert r.exit_code == 3
    verdicts = dict(line.split("\t")[:2][::-1] for line in r.stdout.splitlines())
    assert verdicts == {**{run_id: "ok" for run_id in CLEAN_RUNS}, "tampered": "FAILED"}


def test_recorded_runs_show_without_an_index(cli, sample_store: Path) -> None:
    r = cli("--store", str(sample_store), "runs", "list", "--json")
    assert r.exit_code == 0
    by_id = {d["run_id"]: d for d in json.loads(r.stdout)}
    assert set(by_id) == set(CLEAN_RUNS) | {"tampered"}
    assert by_id["approval-waiting"]["waiting"]["prompt"] == "Deploy payments to production? [y/n]"
    assert by_id["event-paid"]["output"]["paid"] == {"amount": 19.99, "currency": "EUR"}
    assert by_id["tools-run"]["output"] == {"words": 4, "shouted": "DURABLE RUNS SURVIVE RESTARTS"}
    assert by_id["timer-done"]["status"] == "completed"
    marks = json.loads(cli("--store", str(sample_store), "bookmark", "list", "approval-approved", "--json").stdout)
    assert [m["name"] for m in marks] == ["approved"]
    snaps = json.loads(cli("--store", str(sample_store), "snapshot", "list", "--json").stdout)
    assert [s["run_id"] for s in snaps] == ["approval-waiting"]


@pytest.mark.slow
def test_record_script_regenerates_the_samples(tmp_path: Path) -> None:
    """record.sh, run on a copy of sample_runs/, recreates the same runs with the same outcomes."""
    copy = tmp_path / "sample_runs"
    shutil.copytree(SAMPLES, copy, ignore=shutil.ignore_patterns("store", "__pycache__"))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(["sh", str(copy / "record.sh")], capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    runs = sorted(p.name for p in (copy / "store" / "runs").iterdir())
    assert runs == sorted(CLEAN_RUNS + ["tampered"])
    assert not list((copy / "store").glob("index.sqlite3*"))


def test_scripting_guide_shell_blocks_run(tmp_path: Path) -> None:
    """Every ```sh block of docs/scripting.md, in order, in one `sh -e` session."""
    import re

    text = (REPO / "docs" / "scripting.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    assert len(blocks) >= 8
    shutil.copytree(SAMPLES / "workflows", tmp_path / "sample_runs" / "workflows",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "docs" / "examples", tmp_path / "docs" / "examples")
    script = "set -eu\n" + "\n".join(blocks)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The examples clean up after themselves: no run.json, show.json, .runs/ ... left here.
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert "waiting for an answer:" in proc.stdout
    assert "Deploy billing to production? [y/n] ['yes', 'no']" in proc.stdout
    assert '{"deployed": true, "service": "web"}' in proc.stdout
    assert "the new code would strand a waiting run: not deploying" in proc.stdout  # replay caught it


def test_docs_never_install_the_unrelated_pypi_project() -> None:
    """`pip install abstractruntime` fetches a different project from the public index."""
    import re

    pages = [REPO / "README.md", REPO / "docs" / "scripting.md", REPO / "docs" / "cli.md",
             REPO / "docs" / "errors.md", REPO / "docs" / "reliability.md"]
    bad = re.compile(r"pip install\s+['\"]?abstractruntime\b")
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not bad.search(text), page
    scripting = (REPO / "docs" / "scripting.md").read_text(encoding="utf-8")
    assert "- run: pip install .\n" in scripting


def test_cli_reference_examples_run_as_written(tmp_path: Path) -> None:
    """The capture-then-answer lines of docs/cli.md work in a script."""
    import re

    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    capture = re.search(r"`(H=\$\(abstractruntime run wf\.py --no-input\))`", text)
    answer = re.search(r"`(abstractruntime resume \"\$H\" --answer yes)`", text)
    assert capture and answer, "docs/cli.md lost its scripted example"
    shutil.copy(SAMPLES / "workflows" / "approval.py", tmp_path / "wf.py")
    script = f"set -u\n{capture.group(1)} || test $? -eq 5\n{answer.group(1)}\n{answer.group(1)} || echo retried=$?\n"
    # wf.py's folder is registered, as the page says a script's workflows must be.
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "ABSTRACTRUNTIME_STORE": str(tmp_path / "store"), "ABSTRACTRUNTIME_WORKFLOWS": str(tmp_path)}
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "retried=1" in proc.stdout


def test_reliability_page_figures_hold() -> None:
    """reliability.md names no one machine's paths, pins no stale xfails, and its CI count is the suite's."""
    import re

    text = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert not re.search(r"(/tmp/|/home/|/Users/|/work/)", text)
    assert "strict xfails" not in text and "## Known bugs" not in text
    claimed = re.search(r"(\d+) passed", text)
    assert claimed, "the CI form states how many tests passed"
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests/reliability"], capture_output=True, text=True, cwd=REPO, timeout=120)
    collected = re.search(r"(\d+) tests? collected", proc.stdout)
    assert collected, proc.stdout[-500:]
    assert int(claimed.group(1)) == int(collected.group(1))
    # Each test the page names exists in the battery.
    battery = "".join(f.read_text(encoding="utf-8") for f in (REPO / "tests" / "reliability").glob("test_*.py"))
    named = re.findall(r"`(test_\w+)`", text)
    assert named and all(f"def {name}(" in battery for name in named), named


def _checked_script(block: str) -> str:
    """A README block as a script that fails unless each command exits as its ``# exit N`` says (else 0)."""
    import re

    script = []
    for line in block.replace("\\\n", " ").splitlines():
        wanted = re.search(r"\s#\s*exit (\d+)", line)
        command = line[:wanted.start()] if wanted else line
        if not command.strip() or command.lstrip().startswith("#"):
            continue
        if command.rstrip().endswith("&") or re.match(r"\s*(export|while|kill|[A-Z_]+=)", command):
            script.append(command)  # set-up lines: set -e stops the script if one fails
            continue
        code = wanted.group(1) if wanted else "0"
        quoted = command.strip().replace("'", "'\\''")
        script.append(f"rc=0; {command.strip()} >/dev/null || rc=$?; "
                      f"[ \"$rc\" -eq {code} ] || {{ echo 'exit '$rc' (not {code}): {quoted}' >&2; exit 1; }}")
    return "\n".join(script)


def test_sample_runs_readme_commands_are_true(tmp_path: Path) -> None:
    """Every ```sh block of sample_runs/README.md (but the not-run ones), in order, in one `sh -e`
    session on a copy of the samples, each command exiting as the page says."""
    import re

    text = (SAMPLES / "README.md").read_text(encoding="utf-8")
    blocks = [m.group("code") for m in re.finditer(r"(?P<before>[^\n]*)\n```sh\n(?P<code>.*?)```", text, re.S)
              if "not-run" not in m.group("before")]
    assert len(blocks) >= 5 and sum("not-run" in line for line in text.splitlines()) == 2
    shutil.copytree(SAMPLES, tmp_path / "sample_runs", ignore=shutil.ignore_patterns("__pycache__", "index.sqlite3*"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")  # registers sample_runs/workflows
    (tmp_path / "tmp").mkdir()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "NO_COLOR": "1",
           "TMPDIR": str(tmp_path / "tmp")}
    script = "set -eu\n" + "\n".join(_checked_script(block) for block in blocks)
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The commands ran for real: the copy's waiting run was answered, the agent's run finished.
    answered = list((tmp_path / "tmp").glob("*/store/runs/approval-waiting/ledger.jsonl"))
    assert len(answered) == 1 and b'"answer":"yes"' in answered[0].read_bytes().replace(b" ", b"")
    assert (tmp_path / "sample_runs" / "reports" / "index.html").exists()
