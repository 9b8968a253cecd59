"""The report measures an effect from its intent to its outcome, not how long a record took to write."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.report.load import load_run
from abstractruntime.report.page import build_page
from abstractruntime.report.rows import build_rows
from abstractruntime.storage.store import FileStore

LLM = {"type": "llm_call", "payload": {"prompt": "hi"}, "result_key": "r"}


def _at(seconds: float) -> str:
    return f"2030-01-01T00:00:{seconds:06.3f}+00:00"


def _record(seq: int, kind: str, status: str, at: float, **fields: Any) -> dict[str, Any]:
    # Records as LedgerStore.list expands format 3: started_at is `at`, an intent has no ended_at.
    return {"seq": seq, "kind": kind, "status": status, "node_id": "think", "format": 3,
            "started_at": _at(at), "ended_at": None if status == "started" else _at(at), "at": _at(at), **fields}


def test_an_effect_takes_from_its_intent_to_its_outcome_and_each_attempt_on_its_own() -> None:
    records = [
        _record(1, "start", "completed", 0.0),
        _record(2, "effect", "started", 1.0, effect=LLM, effect_id=1, attempt=1),
        _record(3, "effect", "failed", 2.0, effect=LLM, effect_id=1, attempt=1, error="busy"),
        _record(4, "effect", "started", 3.0, effect=LLM, effect_id=1, attempt=2),
        _record(5, "effect", "completed", 7.1, effect=LLM, effect_id=1, attempt=2, result={"content": "ok"}),
        _record(6, "node", "completed", 7.2, result={"next_node": "done"}),
    ]
    rows, stats = build_rows(records)
    assert rows[2]["ms"] == pytest.approx(1000.0)
    assert rows[4]["ms"] == pytest.approx(4100.0)
    assert "ms" not in rows[1] and "ms" not in rows[3]  # an intent is one instant, shown on its outcome
    assert rows[5]["ms"] == 0.0  # a pure step is one record made at one instant
    assert stats["slowest"] == 5 and stats["max_ms"] == pytest.approx(4100.0)


def test_a_real_run_reports_the_handler_time_as_its_slowest_step(tmp_path: Path) -> None:
    def slow_llm(run: Any, effect: Any) -> EffectOutcome:
        time.sleep(0.3)  # the model thinking: the report must show at least this long
        return EffectOutcome.completed({"content": "hello"})

    def think(run: Any, ctx: Any) -> StepPlan:
        return StepPlan("think", effect=Effect(EffectType.LLM_CALL, {"prompt": "hi"}, result_key="r"),
                        next_node="done")

    def done(run: Any, ctx: Any) -> StepPlan:
        return StepPlan("done", complete_output={"text": run.vars["r"]["content"]})

    store = FileStore(tmp_path / "store")
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: slow_llm})
    wf = WorkflowSpec("slow", "think", {"think": think, "done": done})
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    outcome = next(r for r in rt.get_ledger(run_id) if r.get("kind") == "effect" and r["status"] == "completed")
    rows, stats = build_rows(load_run(store, run_id, related=0).records)
    assert stats["slowest"] == outcome["seq"]
    assert stats["max_ms"] >= 300.0
    html, _ = build_page(load_run(store, run_id, related=0))
    assert f"(seq {outcome['seq']})" in html and "slowest step" in html
    shown = re.search(r'<span class="n">([0-9.]+) (ms|s) \(seq', html)
    assert shown is not None and shown.group(2) == "ms" and 300 <= float(shown.group(1)) < 1000, shown


def test_durations_read_as_people_read_them() -> None:
    from abstractruntime.report.page import _duration

    assert [_duration(ms) for ms in (0.253, 41.4, 4100.0)] == ["0.253 ms", "41 ms", "4.10 s"]


def test_the_page_shows_the_workflow_the_chain_recorded_and_no_recorded_path(tmp_path: Path) -> None:
    from abstractruntime.loader import load_workflow_file

    repo = Path(__file__).resolve().parents[2]
    store = FileStore(tmp_path / "store")
    loaded = load_workflow_file(repo / "sample_runs" / "workflows" / "approval.py")
    rt = store.runtime()
    run_id = rt.start(workflow=loaded.workflow)
    rt.tick(workflow=loaded.workflow, run_id=run_id)
    # Someone edits run.json to name a file and another hash: the page believes neither.
    ckpt = tmp_path / "store" / "runs" / run_id / "run.json"
    doc = json.loads(ckpt.read_text())
    doc["state"]["kernel"]["workflow"] = {"workflow_id": "approval", "sha256": "0" * 64,
                                          "source": "/home/someone/evil.py"}
    ckpt.write_text(json.dumps(doc))
    html, _ = build_page(load_run(store, run_id, related=0))
    header = html[html.index("<header>"):html.index("</header>")]
    assert f'id="f-sha256">{loaded.sha256}<' in header
    assert "evil.py" not in header and "0" * 64 not in header and "workflow file" not in header


def test_a_sample_run_recorded_with_a_path_shows_only_id_and_sha256(tmp_path: Path) -> None:
    import shutil

    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "sample_runs" / "store", tmp_path / "store")
    store = FileStore(tmp_path / "store")
    data = load_run(store, "approval-approved", related=0)
    recorded = json.loads((tmp_path / "store" / "runs" / "approval-approved" / "ledger.jsonl").read_text()
                          .splitlines()[0])["delta"]["workflow"]
    assert recorded["source"].endswith("approval.py")  # the format-2 start record names a path
    html, _ = build_page(data)
    header = html[html.index("<header>"):html.index("</header>")]
    # The header names what the run recorded (id, sha256); the path is only in the record's own
    # text on the timeline, as the ledger holds it.
    assert recorded["source"] not in header and "workflow file" not in header
    assert f'id="f-sha256">{recorded["sha256"]}<' in header and 'id="f-workflow">approval<' in header
