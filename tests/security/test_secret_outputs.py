"""What the command prints holds redacted values only; a real value is shown when asked for by path.

A run waits with its secrets live (so its secrets store could fill them in). Every command
that prints its state, records, snapshot or page — plain, ``--json``, ``--jsonl``, ``--at`` —
is scanned for every real value. ``runs show RUN --reveal PATH`` prints the one real value
asked for, while the run's secrets still hold it, and says clearly (exit 3) when they do not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secret_flow import ANSWER, START_VARS, Flow, leaks


@pytest.fixture(params=["folder", "postgres"])
def flow(request: pytest.FixtureRequest, tmp_path: Path) -> Flow:
    store = request.getfixturevalue("database_url") if request.param == "postgres" else str(tmp_path / "store")
    return Flow(tmp_path, store)


def test_every_output_of_a_waiting_run_is_redacted(flow: Flow, tmp_path: Path) -> None:
    started = flow.cli("--json", "run", str(flow.file), "--run-id", "r1", "--vars-json", json.dumps(START_VARS))
    assert started.returncode == 1, started.stderr
    retried = flow.cli("--json", "retry", "r1")
    assert retried.returncode == 5, retried.stderr
    outputs = {"run --json": started, "retry --json": retried}
    for args in (("runs", "show", "r1"), ("runs", "show", "r1", "--json"), ("runs", "show", "r1", "--at", "2"),
                 ("runs", "show", "r1", "--at", "8", "--json"), ("runs", "list", "--json"),
                 ("ledger", "show", "r1"), ("ledger", "show", "r1", "--json"), ("ledger", "show", "r1", "--jsonl"),
                 ("tick", "r1", "--json"), ("snapshot", "create", "r1", "--name", "s", "--json"),
                 ("report", "r1", "-o", str(tmp_path / "page.html")), ("report", "r1", "-o", "-")):
        outputs[" ".join(args)] = flow.cli(*args)
    snap_id = json.loads(outputs["snapshot create r1 --name s --json"].stdout)["snapshot_id"]
    for args in (("snapshot", "show", snap_id), ("snapshot", "show", snap_id, "--json"), ("snapshot", "list", "--json")):
        outputs[" ".join(args)] = flow.cli(*args)
    assert {name: r.returncode for name, r in outputs.items() if r.returncode not in (0, 5)} == {"run --json": 1}
    found = {name: leaks((r.stdout + r.stderr).encode()) for name, r in outputs.items()}
    assert {name: hit for name, hit in found.items() if hit} == {}
    assert leaks((tmp_path / "page.html").read_bytes()) == []
    # What is not secret stays readable, and the secrets say they were redacted.
    shown = json.loads(outputs["runs show r1 --json"].stdout)
    assert shown["run"]["vars"]["plain"] == "visible value" and shown["run"]["vars"]["db_pass"] == "[REDACTED]"
    assert shown["run"]["vars"]["db_url"] == "postgresql://app:[REDACTED]@db.internal:5432/app"
    assert json.loads(retried.stdout)["vars"]["iban"] == "[REDACTED]"  # the workflow's own rule


def test_reveal_prints_the_real_value_while_the_run_holds_it(flow: Flow) -> None:
    assert flow.start("r1").returncode == 1
    assert flow.cli("retry", "r1").returncode == 5
    assert flow.cli("runs", "show", "r1", "--reveal", "vars.db_pass").stdout == "S3CRET03dbPass\n"
    nested = flow.cli("runs", "show", "r1", "--reveal", "vars.deploy.headers.0.1")
    assert nested.returncode == 0 and nested.stdout == "Bearer S3CRET07headerBearer\n"
    whole = flow.cli("runs", "show", "r1", "--reveal", "vars.fetched")
    assert "S3CRET21resultAccess" in whole.stdout and json.loads(whole.stdout)["mode"] == "executed"
    as_json = flow.cli("runs", "show", "r1", "--reveal", "vars.iban", "--json")
    assert json.loads(as_json.stdout) == {"run_id": "r1", "path": "vars.iban", "value": START_VARS["iban"]}
    plain = flow.cli("runs", "show", "r1", "--reveal", "vars.plain")
    assert plain.stdout == "visible value\n"
    missing = flow.cli("runs", "show", "r1", "--reveal", "vars.nothing")
    assert missing.returncode == 2 and "vars.nothing" in missing.stderr
    # Once the run has finished its values are gone: said plainly, never a placeholder.
    assert flow.cli("resume", "r1", "--current", "--answer", ANSWER).returncode == 1
    gone = flow.cli("runs", "show", "r1", "--reveal", "vars.db_pass")
    assert gone.returncode == 3 and gone.stdout == ""
    assert "vars.db_pass" in gone.stderr and "secrets" in gone.stderr
    assert flow.cli("runs", "show", "r1", "--reveal", "vars.plain").stdout == "visible value\n"


GATED = '''
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.spec import WorkflowSpec

def launch(target: str, api_key: str) -> str:
    """Launch something (needs approval)."""
    return f"launched {target} with a key of {len(api_key)} characters"

tools = [launch]
require_approval = ["launch"]

def go(run, ctx):
    calls = [{"name": "launch", "arguments": {"target": "moon", "api_key": "sk-live-S3CRET40toolKey0123456789abcdef"},
              "call_id": "c1"}]
    return StepPlan("go", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": calls}, result_key="res"),
                    next_node="done")

workflow = WorkflowSpec("gated", "go", {"go": go, "done": lambda run, ctx: StepPlan(
    "done", complete_output={"out": run.vars["res"]["results"][0]["output"]})})
'''


def test_tool_calls_waiting_for_approval_are_shown_redacted(flow: Flow) -> None:
    gated = flow.flows / "gated.py"
    gated.write_text(GATED)
    started = flow.cli("--json", "run", str(gated), "--run-id", "g1")
    assert started.returncode == 5, started.stderr
    listed = flow.cli("tools", "list", "g1", "--json")
    shown = [started, listed, flow.cli("tools", "list", "g1"), flow.cli("runs", "show", "g1", "--json")]
    assert [leaks((r.stdout + r.stderr).encode()) for r in shown] == [[]] * len(shown)
    calls = json.loads(listed.stdout)
    assert calls["tool_calls"][0]["arguments"] == {"target": "moon", "api_key": "[REDACTED]"}
    approved = flow.cli("tools", "approve", "g1", "--calls-sha256", calls["calls_sha256"], "--json")
    assert approved.returncode == 0, approved.stderr
    # The tool got the real key (the hash approved is the real calls'); the output shows none.
    assert json.loads(approved.stdout)["output"] == {"out": "launched moon with a key of 39 characters"}
    assert leaks(approved.stdout.encode()) == []
