"""`prune` and `verify --all` at the command line; a pruned id refused by `start` and `run`."""

from __future__ import annotations

import json
from pathlib import Path

WORKFLOW = '''
from abstractruntime import StepPlan, WorkflowSpec

workflow = WorkflowSpec("quick", "only", {"only": lambda run, ctx: StepPlan("only", complete_output={"ok": True})})
'''


def _runs(cli, tmp_path: Path, *ids: str) -> Path:
    wf = tmp_path / "quick.py"
    wf.write_text(WORKFLOW)
    for run_id in ids:
        assert cli("run", str(wf), "--run-id", run_id).exit_code == 0
    return wf


def test_prune_then_verify_all(cli, store: Path, tmp_path: Path) -> None:
    wf = _runs(cli, tmp_path, "a", "b")
    heads = {r: json.loads(cli("verify", r, "--json").stdout)["head_hash"] for r in ("a", "b")}
    dry = cli("prune", "--finished-before", "0s", "--dry-run", "--json")
    assert dry.exit_code == 0 and json.loads(dry.stdout)["count"] == 2 and (store / "runs" / "a").is_dir()
    # Too recent for 30 days: nothing goes.
    assert cli("prune", "--finished-before", "30d").stdout == ""
    done = cli("prune", "--finished-before", "0s", "--status", "completed")
    assert done.exit_code == 0 and done.stdout.split() == ["a", "b"] and "pruned 2 run(s)" in done.stderr
    out = cli("verify", "--all")
    assert out.exit_code == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert [(r[0], r[1], r[3]) for r in rows] == [("pruned", "a", heads["a"]), ("pruned", "b", heads["b"])]
    again = cli("run", str(wf), "--run-id", "a")
    assert again.exit_code == 1 and "was pruned" in again.stderr
    started = cli("start", str(wf), "--run-id", "b", "--json")
    assert started.exit_code == 1 and json.loads(started.stdout)["error"]["code"] == "run_pruned"


def test_an_edited_tombstone_log_fails_verify_all(cli, store: Path, tmp_path: Path) -> None:
    _runs(cli, tmp_path, "a", "b", "c")
    assert cli("prune", "--finished-before", "0s").exit_code == 0
    log = store / "tombstones.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + lines[2])  # one tombstone removed
    out = cli("verify", "--all")
    assert out.exit_code == 3 and "(tombstones)" in out.stdout and "tombstone_chain_broken" in out.stderr
    refused = cli("prune", "--finished-before", "0s")
    assert refused.exit_code == 1 and "tombstone log does not verify" in refused.stderr


def test_bad_prune_options_are_usage_errors(cli, store: Path) -> None:
    for args in (["--finished-before", "soon"], ["--finished-before", "3d", "--status", "waiting"]):
        out = cli("prune", *args)
        assert out.exit_code == 2 and out.stderr.count("\n") <= 2, out.stderr
