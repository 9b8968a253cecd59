"""The commands in-process (typer's CliRunner): results on stdout, messages on stderr, JSON schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


from abstractruntime.core.models import RunState


def test_version_and_help(cli) -> None:
    from abstractruntime import __version__

    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"abstractruntime {__version__}"
    r = cli("--help")
    assert r.exit_code == 0
    for command in ("run", "resume", "emit", "verify", "snapshot", "bookmark", "graph", "worker"):
        assert command in r.stdout


def test_run_completes_with_tools(cli, wf: Path) -> None:
    r = cli("run", str(wf / "tools.py"), "--var", "text=one two three", "--run-id", "t1")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "t1\n"
    assert "completed" in r.stderr and '"words": 3' in r.stderr
    doc = json.loads(cli("runs", "show", "t1", "--json").stdout)
    assert doc["run"]["output"] == {"words": 3, "shouted": "ONE TWO THREE"}
    results = doc["run"]["vars"]["tool_results"]
    assert results["mode"] == "executed"
    assert [x["success"] for x in results["results"]] == [True, True]


def test_run_waits_then_resume_completes(cli, wf: Path) -> None:
    r = cli("run", str(wf / "approval.py"), "--run-id", "a1", "--var", "service=billing")
    assert r.exit_code == 5
    assert r.stdout.startswith("a1@w") and r.stdout.endswith("\n")  # the wait handle
    assert "Deploy billing to production? [y/n]" in r.stderr  # the prompt's brackets survive
    r = cli("resume", "a1", "--current", "--answer", "yes", "--json")
    assert r.exit_code == 0, r.stderr
    state = RunState.from_dict(json.loads(r.stdout))
    assert state.status.value == "completed"
    assert state.output == {"deployed": True, "service": "billing"}


def test_run_json_carries_the_wait(cli, wf: Path) -> None:
    r = cli("--no-input", "run", str(wf / "approval.py"), "--json")
    assert r.exit_code == 5
    doc = json.loads(r.stdout)
    wait = doc["waiting"]
    assert doc["status"] == "waiting"
    assert wait["reason"] == "user"
    assert wait["prompt"] == "Deploy web to production? [y/n]"
    assert wait["choices"] == ["yes", "no"]
    assert wait["wait_key"].startswith("user:" + doc["run_id"])
    # the global --json works too, with the same document
    r2 = cli("--json", "runs", "show", doc["run_id"])
    assert json.loads(r2.stdout)["run"]["waiting"] == wait


def test_answer_from_stdin_and_file(cli, wf: Path, tmp_path: Path) -> None:
    cli("run", str(wf / "approval.py"), "--run-id", "s1")
    r = cli("resume", "s1", "--current", "--answer", "-", input="no\n")
    assert r.exit_code == 0, r.stderr
    assert json.loads(cli("runs", "show", "s1", "--json").stdout)["run"]["output"]["deployed"] is False
    cli("run", str(wf / "approval.py"), "--run-id", "f1")
    answer = tmp_path / "answer.txt"
    answer.write_text("yes\n")
    assert cli("resume", "f1", "--current", "--answer-file", str(answer)).exit_code == 0
    assert json.loads(cli("runs", "show", "f1", "--json").stdout)["run"]["output"]["deployed"] is True


def test_payload_file_and_event_emit(cli, wf: Path, tmp_path: Path) -> None:
    r = cli("run", str(wf / "event.py"), "--var", "order_id=o-7", "--run-id", "e1")
    assert r.exit_code == 5 and "payment:o-7" in r.stderr
    cli("run", str(wf / "event.py"), "--var", "order_id=o-7", "--run-id", "e2")
    cli("run", str(wf / "event.py"), "--var", "order_id=o-8", "--run-id", "e3")
    r = cli("emit", "payment:o-7", "--payload", '{"amount": 5}', "--json")
    assert r.exit_code == 0, r.stderr
    done = json.loads(r.stdout)
    assert sorted(d["run_id"] for d in done) == ["e1", "e2"]
    assert all(d["output"]["paid"] == {"amount": 5} for d in done)
    # e3 still waits; deliver with resume --payload-file
    payload = tmp_path / "p.json"
    payload.write_text('{"amount": 8}')
    r = cli("resume", "e3", "--current", "--payload-file", str(payload), "--wait-key", "payment:o-8")
    assert r.exit_code == 0, r.stderr
    # nobody waits any more
    r = cli("emit", "payment:o-7")
    assert r.exit_code == 4 and r.stdout == "" and "no run is waiting" in r.stderr


def test_emit_hand_off_leaves_the_run_to_a_worker(cli, wf: Path) -> None:
    cli("run", str(wf / "event.py"), "--var", "order_id=o-9", "--run-id", "h1")
    r = cli("emit", "payment:o-9", "--payload", '{"amount": 2}', "--hand-off", "--json")
    assert r.exit_code == 0, r.stderr
    assert [(d["run_id"], d["status"]) for d in json.loads(r.stdout)] == [("h1", "running")]
    assert "handed off" in r.stderr
    r = cli("worker", "--once")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "h1\tcompleted\n"
    assert json.loads(cli("runs", "show", "h1", "--json").stdout)["run"]["output"]["paid"] == {"amount": 2}


def test_wait_key_mismatch_is_bad_input(cli, wf: Path) -> None:
    cli("run", str(wf / "event.py"), "--var", "order_id=o-1", "--run-id", "k1")
    r = cli("resume", "k1", "--current", "--payload", "{}", "--wait-key", "payment:other")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and "wait_key mismatch" in r.stderr


def test_runs_list_filters_sort_and_tsv(cli, wf: Path) -> None:
    cli("run", str(wf / "tools.py"), "--run-id", "c1")
    cli("run", str(wf / "approval.py"), "--run-id", "w1")
    cli("run", str(wf / "event.py"), "--run-id", "w2")
    r = cli("runs", "list")
    lines = [line.split("\t") for line in r.stdout.splitlines()]
    assert {row[0] for row in lines} == {"c1", "w1", "w2"}
    assert all(len(row) == 6 for row in lines)
    r = cli("runs", "list", "--status", "waiting", "--sort", "id")
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == ["w1", "w2"]
    r = cli("runs", "list", "--wait-reason", "user", "--json")
    assert [d["run_id"] for d in json.loads(r.stdout)] == ["w1"]
    r = cli("runs", "list", "--workflow", "tools", "--json")
    assert [d["run_id"] for d in json.loads(r.stdout)] == ["c1"]
    assert len(cli("runs", "list", "--limit", "1").stdout.splitlines()) == 1
    r = cli("runs", "list", "--status", "sleeping")
    assert r.exit_code == 2 and "--status must be one of" in r.stderr


def test_runs_show_plain_has_prompt_and_choices(cli, wf: Path) -> None:
    cli("run", str(wf / "approval.py"), "--run-id", "p1")
    r = cli("runs", "show", "p1")
    fields = dict(line.split("\t", 1) for line in r.stdout.splitlines() if not line.startswith("step\t"))
    assert fields["status"] == "waiting"
    assert fields["prompt"] == "Deploy web to production? [y/n]"
    assert fields["choices"] == "yes, no"
    assert fields["free_text"] == "not allowed"
    steps = [line.split("\t") for line in r.stdout.splitlines() if line.startswith("step\t")]
    assert [s[2] for s in steps] == ["start", "effect", "effect"]


def test_ledger_show_forms(cli, wf: Path) -> None:
    cli("run", str(wf / "tools.py"), "--run-id", "l1")
    records = json.loads(cli("ledger", "show", "l1", "--json").stdout)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    lines = cli("ledger", "show", "l1", "--jsonl").stdout.splitlines()
    assert [json.loads(x) for x in lines] == records
    tail = cli("ledger", "show", "l1", "--jsonl", "--from", "3").stdout.splitlines()
    assert [json.loads(x)["seq"] for x in tail] == [r["seq"] for r in records if r["seq"] >= 3]
    plain = cli("ledger", "show", "l1").stdout.splitlines()
    assert [p.split("\t")[5] for p in plain] == [r["record_hash"] for r in records]


def test_cancel(cli, wf: Path) -> None:
    cli("run", str(wf / "approval.py"), "--run-id", "x1")
    r = cli("cancel", "x1", "--reason", "not needed", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["status"] == "cancelled" and doc["error"] == "not needed"
    r = cli("resume", "x1", "--current", "--answer", "yes")
    assert r.exit_code == 1 and "not waiting" in r.stderr


def test_failed_run_exits_1(cli, tmp_path: Path) -> None:
    path = tmp_path / "fails.py"
    path.write_text(
        "from abstractruntime.core.spec import WorkflowSpec\n"
        "def boom(run, ctx):\n    raise ValueError('no good')\n"
        "workflow = WorkflowSpec('fails', 'boom', {'boom': boom})\n")
    r = cli("run", str(path), "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["status"] == "failed"
    assert "ValueError: no good" in json.loads(r.stdout)["error"]


def test_start_then_tick(cli, wf: Path) -> None:
    r = cli("start", str(wf / "tools.py"), "--run-id", "st1")
    assert r.exit_code == 0 and r.stdout == "st1\n"
    assert json.loads(cli("runs", "show", "st1", "--json").stdout)["run"]["status"] == "running"
    r = cli("tick", "st1", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["status"] == "completed"
    r = cli("tick")
    assert r.exit_code == 2


def test_timer_tick_due(cli, wf: Path) -> None:
    r = cli("run", str(wf / "timer.py"), "--var", "delay_seconds=0", "--run-id", "tm1")
    # a zero delay is already due: the run either completed or waits on a due timer
    if r.exit_code == 5:
        r = cli("tick", "--due", "--json")
        assert r.exit_code == 0
        assert [d["run_id"] for d in json.loads(r.stdout)] == ["tm1"]
    assert json.loads(cli("runs", "show", "tm1", "--json").stdout)["run"]["status"] == "completed"
    r = cli("run", str(wf / "timer.py"), "--var", "delay_seconds=3600", "--run-id", "tm2")
    assert r.exit_code == 5
    r = cli("tick", "--due", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == []
    assert cli("tick", "tm2").exit_code == 5
    r = cli("worker", "--once")
    assert r.exit_code == 0 and r.stdout == ""


def test_vars_json_and_var_json_values(cli, wf: Path) -> None:
    r = cli("start", str(wf / "tools.py"), "--vars-json", '{"a": 1, "b": "x"}', "--var", "b=[1,2]",
            "--var", "c=plain text", "--json")
    assert json.loads(r.stdout)["vars"] == {"a": 1, "b": [1, 2], "c": "plain text"}


def test_snapshot_lifecycle(cli, wf: Path) -> None:
    cli("run", str(wf / "approval.py"), "--run-id", "sn1")
    r = cli("snapshot", "create", "sn1", "--name", "before", "--tag", "demo", "--json")
    assert r.exit_code == 0, r.stderr
    snap = json.loads(r.stdout)
    sid = snap["snapshot_id"]
    assert snap["run_id"] == "sn1" and snap["run_state"]["status"] == "waiting"
    cli("resume", "sn1", "--current", "--answer", "no")
    assert json.loads(cli("runs", "show", "sn1", "--json").stdout)["run"]["status"] == "completed"
    listed = cli("snapshot", "list", "--run", "sn1").stdout.splitlines()
    assert [line.split("\t")[0] for line in listed] == [sid]
    assert json.loads(cli("snapshot", "show", sid, "--json").stdout) == snap
    # fork: a new run from the snapshot, still waiting
    r = cli("snapshot", "restore", sid, "--fork", "--run-id", "sn1-fork", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "waiting"
    assert cli("resume", "sn1-fork", "--current", "--answer", "yes").exit_code == 0
    # restore in place: the completed run waits again; history is kept and verifies
    r = cli("snapshot", "restore", sid)
    assert r.exit_code == 0 and r.stdout == "sn1\n"
    assert json.loads(cli("runs", "show", "sn1", "--json").stdout)["run"]["status"] == "waiting"
    kinds = [x["kind"] for x in json.loads(cli("ledger", "show", "sn1", "--json").stdout)]
    assert kinds[-1] == "restore" and "complete" in kinds
    assert cli("verify", "sn1").exit_code == 0
    assert cli("snapshot", "delete", sid).exit_code == 0
    r = cli("snapshot", "delete", sid)
    assert r.exit_code == 4 and "Unknown snapshot" in r.stderr
    assert cli("snapshot", "show", sid).exit_code == 4


def test_bookmarks(cli, wf: Path) -> None:
    cli("run", str(wf / "tools.py"), "--run-id", "b1")
    r = cli("bookmark", "add", "b1", "first", "--seq", "1", "--note", "the start [really]", "--json")
    assert r.exit_code == 0, r.stderr
    mark = json.loads(r.stdout)
    assert mark["seq"] == 1 and mark["note"] == "the start [really]"
    assert cli("bookmark", "add", "b1", "head").exit_code == 0
    rows = [line.split("\t") for line in cli("bookmark", "list", "b1").stdout.splitlines()]
    assert [row[0] for row in rows] == ["first", "head"]
    assert rows[0][2] == mark["record_hash"]
    assert cli("verify", "b1", "--json").exit_code == 0
    assert cli("bookmark", "remove", "b1", "first").exit_code == 0
    r = cli("bookmark", "remove", "b1", "first")
    assert r.exit_code == 4 and "no bookmark named" in r.stderr
    assert cli("bookmark", "list", "nope").exit_code == 4


def test_verify_single_and_all(cli, wf: Path, store: Path) -> None:
    cli("run", str(wf / "tools.py"), "--run-id", "v1")
    cli("run", str(wf / "approval.py"), "--run-id", "v2")
    r = cli("verify", "v1", "--json")
    assert r.exit_code == 0
    report = json.loads(r.stdout)
    assert report["ok"] is True and report["run_id"] == "v1"
    records = json.loads(cli("ledger", "show", "v1", "--json").stdout)
    assert report["head_hash"] == records[-1]["record_hash"]
    assert cli("verify", "v1", "--expect-head", records[1]["record_hash"]).exit_code == 0
    r = cli("verify", "v1", "--expect-head", "0" * 64)
    assert r.exit_code == 3
    r = cli("verify", "--all")
    assert r.exit_code == 0
    assert sorted(line.split("\t")[1] for line in r.stdout.splitlines()) == ["v1", "v2"]
    # tamper with one record: verify names it and exits 3
    ledger = store / "runs" / "v1" / "ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    assert '"node_id":"call_tools"' in lines[1]
    lines[1] = lines[1].replace('"node_id":"call_tools"', '"node_id":"call_toolz"')
    ledger.write_text("".join(lines))
    r = cli("verify", "--all", "--json")
    assert r.exit_code == 3
    docs = {d["run_id"]: d for d in json.loads(r.stdout)}
    assert docs["v1"]["ok"] is False and docs["v2"]["ok"] is True
    r = cli("verify", "v1")
    assert r.exit_code == 3 and r.stdout.startswith("FAILED\tv1\t")
    assert "error: run v1:" in r.stderr
    assert cli("verify").exit_code == 2


def test_verify_jobs(cli, wf: Path, store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from abstractruntime.storage import verify_pool

    monkeypatch.setattr(verify_pool, "PARALLEL_STORE_MIN_BYTES", 1)  # the runs go to worker processes
    for n, name in enumerate(["tools.py", "approval.py", "tools.py"]):
        cli("run", str(wf / name), "--run-id", f"j{n}")
    one = cli("verify", "--all", "--jobs", "1", "--json")
    two = cli("verify", "--all", "--jobs", "2", "--json")
    assert one.exit_code == two.exit_code == 0
    assert json.loads(one.stdout) == json.loads(two.stdout)
    assert cli("verify", "j1", "--jobs", "2").exit_code == 0
    r = cli("verify", "--all", "--jobs", "0")
    assert r.exit_code == 2 and "--jobs" in r.stderr


def test_graph(cli, wf: Path) -> None:
    r = cli("graph", str(wf / "approval.py"))
    assert r.exit_code == 0
    text = r.stdout
    assert text.startswith("flowchart TD\n")
    ids = {}
    for line in text.splitlines():
        if '["' in line:
            nid, label = line.strip().split('["')
            ids[label.rstrip('"]')] = nid
    assert set(ids) == {"ask", "decide", "deploy", "rejected"}
    for a, b in (("ask", "decide"), ("decide", "deploy"), ("decide", "rejected")):
        assert f"{ids[a]} --> {ids[b]}" in text
    assert f"{ids['deploy']} --> stop" in text and f"{ids['rejected']} --> stop" in text
    assert "class " not in text
    cli("run", str(wf / "approval.py"), "--run-id", "g1")
    cli("resume", "g1", "--current", "--answer", "no")
    marked = cli("graph", str(wf / "approval.py"), "--run", "g1").stdout
    assert "classDef visited" in marked and "linkStyle" in marked
    visited_line = next(line for line in marked.splitlines() if line.strip().startswith("class ") and "visited" in line)
    assert ids["deploy"] not in visited_line.split()[1].split(",")
    assert ids["decide"] in visited_line.split()[1].split(",")
    assert f"class {ids['rejected']} current" in marked


def test_quiet_silences_messages_not_results(cli, wf: Path) -> None:
    r = cli("-q", "run", str(wf / "approval.py"), "--run-id", "q1")
    assert r.exit_code == 5 and r.stdout.startswith("q1@w") and r.stderr == ""
    r = cli("-q", "resume", "q1", "--current", "--answer", "bogus")
    assert r.exit_code == 2 and r.stderr.startswith("error: ")


def test_graph_json(cli, wf: Path) -> None:
    cli("run", str(wf / "approval.py"), "--run-id", "gj")
    cli("resume", "gj", "--current", "--answer", "yes")
    doc = json.loads(cli("graph", str(wf / "approval.py"), "--run", "gj", "--json").stdout)
    assert doc["nodes"] == ["ask", "decide", "deploy", "rejected"]
    assert ["decide", "rejected"] in doc["edges"]
    assert doc["ends"] == ["deploy", "rejected"]
    assert doc["visited"] == ["ask", "decide", "deploy"]
    assert doc["taken"] == [["ask", "decide"], ["decide", "deploy"]]
    assert doc["current_node"] == "deploy"
    assert doc["mermaid"].startswith("flowchart TD")


def test_worker_once_exit_code_says_whether_the_pass_failed(cli, wf: Path) -> None:
    # Nothing runnable: exit 0, no lines.
    r = cli("worker", "--once")
    assert (r.exit_code, r.stdout) == (0, "")
    # Work done: exit 0, one line per run advanced.
    cli("run", str(wf / "event.py"), "--var", "order_id=o-1", "--run-id", "w1")
    cli("emit", "payment:o-1", "--payload", "{}", "--hand-off")
    r = cli("worker", "--once")
    assert (r.exit_code, r.stdout) == (0, "w1\tcompleted\n")
    # A failure: w2's code changed since it recorded it (drift), so it cannot be advanced.
    cli("run", str(wf / "event.py"), "--var", "order_id=o-2", "--run-id", "w2")
    cli("emit", "payment:o-2", "--payload", "{}", "--hand-off")
    (wf / "event.py").write_text((wf / "event.py").read_text() + "\n# edited\n")
    r = cli("worker", "--once")
    assert (r.exit_code, r.stdout) == (1, "")
    assert "error: run w2: " in r.stderr and "changed since" in r.stderr


def test_the_hint_after_an_event_wait_shows_emit_with_an_id(cli, wf: Path) -> None:
    r = cli("run", str(wf / "event.py"), "--var", "order_id=o-5", "--run-id", "e5")
    assert r.exit_code == 5
    hint = next(line for line in r.stderr.splitlines() if "abstractruntime emit" in line)
    assert "abstractruntime emit payment:o-5 --id ID --payload JSON" in hint
    # The hint works as printed, and --id makes a retried emit a no-op.
    for _ in range(2):
        r = cli("emit", "payment:o-5", "--id", "pay-5", "--payload", '{"amount": 5}')
        assert r.exit_code == 0, r.stderr
    assert json.loads(cli("runs", "show", "e5", "--json").stdout)["run"]["status"] == "completed"
