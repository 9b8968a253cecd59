"""The report's pieces on their own: escaping, rows, graph, verdict, record-format tolerance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from abstractruntime.report.escape import csp_hash, script_json, text
from abstractruntime.report.graph import build_graph, fallback_svg, render_graph, to_dot, transitions
from abstractruntime.report.rows import MAX_DETAIL_CHARS, build_rows
from abstractruntime.report.verdict import checks, reverify_command
from report_support import BREAKOUT, HOSTILE, HOSTILE_NODE, RTL


def test_script_json_cannot_end_its_element_and_round_trips() -> None:
    value = {"a": BREAKOUT, "b": "\u2028\u2029", "c": "<!-- <script> -->", "d": "\\u003c"}
    out = script_json(value)
    assert "<" not in out and ">" not in out and "&" not in out
    assert "\u2028" not in out and "\u2029" not in out
    assert json.loads(out) == value


def test_text_escapes_markup_and_quotes() -> None:
    assert text(HOSTILE) == ("&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;img src=x "
                             "onerror=&quot;window.__pwned=2&quot;&gt;")
    assert text(None) == ""


def test_csp_hash_is_base64_sha256() -> None:
    assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", csp_hash("x"))


def _rec(seq: int, node: str, kind: str = "node", status: str = "completed", **kw: object) -> dict:
    base = {"seq": seq, "node_id": node, "kind": kind, "status": status, "started_at": f"2030-01-01T00:00:0{seq}+00:00",
            "ended_at": f"2030-01-01T00:00:0{seq}.5+00:00"}
    base.update(kw)
    return base


def test_transitions_follow_node_ids_and_next_node() -> None:
    records = [_rec(1, "a", "start"), _rec(2, "a", result={"next_node": "b"}), _rec(3, "b", result={"next_node": "a"}),
               _rec(4, "a", result={"next_node": "c"})]
    nodes, steps = transitions(records)
    assert nodes == ["a", "b", "c"]
    assert steps == [("a", "b"), ("b", "a"), ("a", "c")]
    graph = build_graph(records, related=[(["a", "d"], [("a", "d")])], status="completed")
    assert graph.path == ["a", "b", "a", "c"]
    assert graph.nodes == ["a", "b", "c", "d"] and graph.visited == {"a", "b", "c"}
    assert graph.other == {("a", "d")}


def test_dot_text_quotes_hostile_names() -> None:
    graph = build_graph([_rec(1, HOSTILE_NODE), _rec(2, 'x"y\\', result={"next_node": "z"})])
    dot = to_dot(graph)
    # node ids are n0..; names appear only inside quoted, escaped labels
    assert '\\"node\\"' in dot and "&amp;" in dot and '"x\\"y\\\\"' in dot


def test_fallback_svg_escapes_and_marks_the_path() -> None:
    graph = build_graph([_rec(1, "a"), _rec(2, HOSTILE_NODE), _rec(3, "c")], related=[(["zz"], [("a", "zz")])])
    svg = fallback_svg(graph)
    assert "<b " not in svg and "&lt;b onmouseover=" in svg
    assert svg.count('class="edge taken"') == 2 and svg.count('class="edge nottaken"') == 1
    assert 'class="node notvisited"' in svg


def test_render_graph_fallback_when_dot_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABSTRACTRUNTIME_DOT", "none")
    svg, engine = render_graph(build_graph([_rec(1, "a"), _rec(2, "b")]))
    assert engine == "simple" and svg.startswith("<svg")
    from abstractruntime.core.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        render_graph(build_graph([_rec(1, "a")]), layout="dot")


def test_rows_summaries_waits_and_durations() -> None:
    ask = {"type": "ask_user", "payload": {"prompt": "Go?", "choices": ["yes", "no"]}, "result_key": "r"}
    wait = {"reason": "user", "prompt": "Go?", "choices": ["yes", "no"], "wait_key": "w1", "resume_to_node": "b"}
    records = [
        _rec(1, "a", "start", result={"vars": {"x": 1}}),
        _rec(2, "a", "effect", "started", effect=ask, step_id="s1", ended_at=None),
        _rec(3, "a", "effect", "waiting", effect=ask, step_id="s1", result={"wait": wait}),
        _rec(4, "a", "resume", result={"payload": {"answer": "yes"}, "wait_key": "w1"}, actor_id="ana"),
        _rec(5, "b", "complete", result={"output": {"ok": True}}),
    ]
    rows, stats = build_rows(records)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[1]["sum"] == "asks: Go? [yes / no]" and "ms" not in rows[1]
    assert rows[2]["eff_ref"] == 2 and "eff" not in rows[2]  # the same effect is embedded once
    assert rows[2]["wait"]["prompt"] == "Go?" and rows[2]["sum"].startswith("waits for an answer")
    assert rows[3]["sum"] == "answered: yes" and rows[3]["by"] == "ana"
    assert rows[3]["wait_ms"] == pytest.approx(1000.0)  # from the wait record's end to the answer's end
    assert rows[4]["sum"] == 'completed: {"ok": true}'
    assert rows[0]["ms"] == pytest.approx(500.0) and stats["waits"] == 1
    # The ask_user effect: from its intent (seq 2 starts at :02) to its waiting outcome (ends at :03.5).
    assert rows[2]["ms"] == pytest.approx(1500.0) and stats["max_ms"] == pytest.approx(1500.0)
    assert stats["slowest"] == 3


def test_rows_tolerate_other_formats_and_missing_fields() -> None:
    records = [
        {"seq": 1, "kind": "start", "node_id": "a", "delta": {"vars": {"x": 1}}, "effect_id": 7, "format": 2},
        {"kind": "node"},  # no seq, no node, no times
        {"seq": 3, "kind": "effect", "status": "waiting", "node_id": "a", "effect": {"type": "wait_event",
         "payload": {"wait_key": "k"}}, "result": {"wait": {"reason": "event", "wait_key": "k", "wait_id": "w-3"}}},
        {"seq": 4, "kind": "unreadable", "status": "unreadable", "error": "line 4 is not JSON", "raw": "{oops"},
    ]
    rows, stats = build_rows(records)
    assert rows[0]["extra"] == {"delta": {"vars": {"x": 1}}, "effect_id": 7}
    assert "extra" not in build_rows([{"seq": 1, "kind": "node", "wait_id": None}])[0][0]
    assert rows[1]["seq"] is None and rows[1]["node"] is None
    assert rows[2]["wait"]["wait_id"] == "w-3"
    assert rows[3]["err"] == "line 4 is not JSON" and stats["failures"] == 1


def test_huge_values_are_cut_to_a_preview() -> None:
    big = "x" * (MAX_DETAIL_CHARS + 10)
    rows, _ = build_rows([_rec(1, "a", "complete", result={"output": big})])
    res = rows[0]["res"]
    assert res["truncated"] is True and res["chars"] > MAX_DETAIL_CHARS and len(res["preview"]) < 5000


def test_verdict_layers_and_reverify_command() -> None:
    ok = {"ok": True, "count": 3, "checkpoint_head": {"seq": 3}, "bookmarks_checked": 1, "signature": "unchecked",
          "problems": []}
    assert [c[:2] for c in checks(ok, "files")] == [("chain", "ok"), ("checkpoint", "ok"), ("bookmarks", "ok"),
                                                    ("signature", "unchecked")]
    bad = dict(ok, ok=False, problems=[{"type": "record_hash_mismatch", "seq": 2},
                                       {"type": "bookmark_mismatch", "seq": 1}])
    states = dict((c[0], c[1]) for c in checks(bad, "files"))
    assert states["chain"] == "failed" and states["bookmarks"] == "failed" and states["checkpoint"] == "ok"
    assert dict((c[0], c[1]) for c in checks(ok, "chain"))["checkpoint"] == "unchecked"
    assert reverify_command("my store", "r1", "ab") == "abstractruntime --store 'my store' verify r1 --expect-head ab"


def test_importing_abstractruntime_does_not_load_the_report() -> None:
    import subprocess
    import sys

    code = ("import sys, abstractruntime; abstractruntime.open_store; "
            "print(any(m.startswith('abstractruntime.report') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent)
    assert out.stdout.strip() == "False"


def test_rtl_text_survives_escaping() -> None:
    assert RTL in json.loads(script_json(RTL)) and text(RTL) == RTL


def test_the_report_package_uses_only_the_standard_library() -> None:
    import subprocess
    import sys

    code = ("import sys; base = set(sys.modules); import abstractruntime.report; "
            "new = {m.split('.')[0] for m in set(sys.modules) - base}; "
            "print(sorted(new - set(sys.stdlib_module_names) - {'abstractruntime'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
