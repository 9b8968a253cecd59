"""The agent-loop group: an agent's conversation on our file store, LangGraph + SqliteSaver and DBOS/SQLite.

The loop every agent runs (docs/performance.md, "The agent loop"): call the model with the
whole conversation, append its reply — and, in the "tools" variant, call one tool with the
reply's tool call and append its output. Every message is 1 KB of JSON. For each number of
turns and each variant, in one run and one after the other, the same loop is measured:

- **ours**: a workflow on ``FileStore(durability="fsync")`` whose node appends the last result to
  ``vars["messages"]`` and performs an ``llm_call`` effect with the whole list (then a
  ``tool_calls`` effect in the "tools" variant), ticked to the end by the default API
  (``tick(max_steps=100)`` until it completes);
- **LangGraph**: a ``StateGraph`` whose state is ``Annotated[list, operator.add]``, with
  ``SqliteSaver`` and ``durability="sync"`` (benchmarks/baselines/agent_langgraph.py);
- **DBOS**: one ``@DBOS.workflow`` keeping the messages in a local list, a ``@DBOS.step`` per call,
  its system database in SQLite (benchmarks/baselines/agent_dbos.py).

Measured: everything the run leaves on disk against the conversation's own bytes (its compact
JSON), the wall time of the loop, and the mean cost of a turn early (turns 11–60) and late (the
last 50: turns 951–1,000 of 1,000) — a turn being the time from one model call to the next.
LangGraph copies the whole conversation into every checkpoint (quadratic: ~0.5 GB at 1,000
turns), so it runs up to ``Sizes.agent_langgraph_max_turns`` turns. At 1,000 turns ours runs
``Sizes.agent_flat_runs`` times: the two windows of one run move with the disk's fsync times,
so the flat-cost rows give the median run's ratio (and each run's).

``python -m benchmarks.agent_loop`` runs only this group; ``python -m benchmarks`` runs it with
the others (``--only agent_loop`` selects it).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from . import harness, workloads
from .report import Row, _ok, _ratio, _why, ms

HERE = Path(__file__).resolve().parent
SCRIPTS = {"langgraph": HERE / "baselines" / "agent_langgraph.py", "dbos": HERE / "baselines" / "agent_dbos.py"}
LABELS = {"langgraph": "LangGraph+SqliteSaver", "dbos": "DBOS/SQLite"}
# The issue's targets, checked on every variant.
BYTES_TURNS, BYTES_TARGET = 200, 2.0
FLAT_TURNS, FLAT_TARGET = 1000, 1.3


def workflow(turns: int, size: int, tools: bool) -> Any:
    """The agent loop as a workflow: ``agent`` appends the last tool output (or reply) and calls the
    model; in the "tools" variant ``act`` appends the reply and calls the tool."""
    from abstractruntime.core.models import Effect, EffectType, StepPlan
    from abstractruntime.core.spec import WorkflowSpec

    per_turn = 2 if tools else 1

    def agent(run: Any, ctx: Any) -> Any:
        messages = run.vars["messages"]
        last = "tool" if tools else "reply"
        if last in run.vars:
            messages.append(run.vars[last])
        if (len(messages) - 1) // per_turn >= turns:
            return StepPlan("agent", complete_output={"messages": len(messages)})
        return StepPlan("agent", effect=Effect(EffectType.LLM_CALL, {"messages": messages}, result_key="reply"),
                        next_node="act" if tools else "agent")

    def act(run: Any, ctx: Any) -> Any:
        reply = run.vars["reply"]
        run.vars["messages"].append(reply)
        return StepPlan("act", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": reply["tool_calls"]},
                                             result_key="tool"), next_node="agent")

    nodes = {"agent": agent, "act": act} if tools else {"agent": agent}
    return WorkflowSpec(f"agent_loop_{'tools' if tools else 'chat'}", "agent", nodes)


def handlers(size: int, tools: bool, stamps: list[float], cpu: Optional[list[float]] = None) -> dict[Any, Any]:
    """The model (1 KB replies, stamped; ``cpu``: the process's CPU time too) and the tool (1 KB
    outputs): they look only at how many messages they were given."""
    from abstractruntime.core.models import EffectType
    from abstractruntime.core.runtime import EffectOutcome

    def model(run: Any, effect: Any) -> Any:
        stamps.append(harness.clock())
        if cpu is not None:
            cpu.append(time.process_time())
        return EffectOutcome.completed(workloads.model_reply(len(effect.payload["messages"]), size, tools=tools))

    def tool(run: Any, effect: Any) -> Any:
        return EffectOutcome.completed(workloads.tool_output(effect.payload["tool_calls"][0], size))

    return {EffectType.LLM_CALL: model, EffectType.TOOL_CALLS: tool}


def run_files(run_dir: Path) -> dict[str, int]:
    """Every file a run left in its directory, by kind, and the total."""
    kinds = {"ledger.jsonl": "ledger", "run.json": "checkpoint", "anchors.jsonl": "anchors",
             "secrets.jsonl": "secrets", "bookmarks.json": "bookmarks"}
    out: dict[str, int] = {}
    for path in sorted(run_dir.rglob("*")):
        if path.is_file():
            kind = kinds.get(path.name, "other")
            out[kind] = out.get(kind, 0) + path.stat().st_size
    out["total"] = sum(out.values())
    return out


def measure_ours(turns: int, variant: str, size: int, work: str) -> dict[str, Any]:
    """The loop on a fresh file store with fsync on; times, bytes on disk, the conversation's bytes."""
    from abstractruntime.storage.store import FileStore

    from abstractruntime.report import build_report
    from abstractruntime.storage.verify import verify_run

    tools = variant == "tools"
    store = FileStore(tempfile.mkdtemp(dir=work), durability="fsync")
    stamps: list[float] = []
    cpu: list[float] = []
    try:
        wf = workflow(turns, size, tools)
        rt = store.runtime(effect_handlers=handlers(size, tools, stamps, cpu))
        t0 = harness.clock()
        run_id = rt.start(workflow=wf, vars={"messages": [workloads.first_message()]})
        state = workloads.run_to_end(rt, wf, run_id)
        end = harness.clock()
        cpu_end = time.process_time()
        assert state.status.value == "completed", (state.status, state.error)
        messages = state.vars["messages"]
        assert len(messages) == 1 + turns * (2 if tools else 1), len(messages)
        conversation = workloads.conversation_bytes(messages)
        records = store.ledger.head(run_id).seq
    finally:
        store.close()
    files = run_files(store.root / "runs" / run_id)
    # Reading it back: the whole verify, and the HTML report, of the finished run.
    reader = FileStore(store.root, durability="none")
    try:
        t1 = harness.clock()
        assert verify_run(reader, run_id).ok
        t2 = harness.clock()
        page = build_report(reader, run_id)
        t3 = harness.clock()
    finally:
        reader.close()
    cpu_costs = workloads.turn_costs(cpu, cpu_end, turns)
    return {"turns": turns, "variant": variant, "seconds": end - t0, "conversation_bytes": conversation,
            "disk_bytes": files["total"], "files": files, "records": records,
            "store_bytes": harness.tree_bytes(store.root), **workloads.turn_costs(stamps, end, turns),
            "cpu_early_seconds": cpu_costs["early_seconds"], "cpu_late_seconds": cpu_costs["late_seconds"],
            "verify_seconds": t2 - t1, "report_seconds": t3 - t2, "report_bytes": len(page.encode("utf-8")),
            "durability": 'FileStore(durability="fsync"): one write + fsync per effect (intent first)'}


def measure_baseline(name: str, python: Path, turns: int, variant: str, size: int, work: str) -> dict[str, Any]:
    """One baseline run in the bench venv (a fresh process and database)."""
    spec = {"turns": turns, "variant": variant, "message_bytes": size, "tmp": work}
    return harness.run_json_script(python, SCRIPTS[name], spec, cwd=work)


def run(sizes: Any, work: str, *, bench_python: Optional[Path] = None, baselines: Optional[set[str]] = None,
        log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Every (turns, variant): ours, then LangGraph, then DBOS, one after the other."""
    from .ours import fsync_costs

    wanted = set(LABELS) if baselines is None else baselines & set(LABELS)
    size = sizes.agent_message_bytes
    out: dict[str, Any] = {"message_bytes": size, "floor": fsync_costs(sizes, work), "points": []}
    for turns in sizes.agent_turns:
        for variant in sizes.agent_variants:
            log(f"agent_loop: {variant}, {turns} turns, ours")
            point: dict[str, Any] = {"turns": turns, "variant": variant,
                                     "ours": measure_ours(turns, variant, size, work)}
            if turns == FLAT_TURNS:
                # More runs of ours at this length: the flat row is their median (see flat_runs).
                runs = [point["ours"]]
                for n in range(2, sizes.agent_flat_runs + 1):
                    log(f"agent_loop: {variant}, {turns} turns, ours (run {n} of {sizes.agent_flat_runs})")
                    runs.append(measure_ours(turns, variant, size, work))
                point["ours"]["flat_runs"] = [(r["late_seconds"], r["early_seconds"], r["cpu_late_seconds"],
                                               r["cpu_early_seconds"]) for r in runs]
            for name in LABELS:
                if name not in wanted:
                    point[name] = {"skipped": "not selected (--baselines)"}
                elif bench_python is None:
                    from .runner import VENV_HINT

                    point[name] = {"skipped": f"no bench venv (create it: {VENV_HINT})"}
                elif name == "langgraph" and turns > sizes.agent_langgraph_max_turns:
                    point[name] = {"skipped": f"more than {sizes.agent_langgraph_max_turns} turns: every checkpoint "
                                              "copies the whole conversation (quadratic bytes)"}
                else:
                    log(f"agent_loop: {variant}, {turns} turns, {LABELS[name]}")
                    point[name] = measure_baseline(name, bench_python, turns, variant, size, work)
            out["points"].append(point)
    return out


def _kb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} KB"


def _s(seconds: float) -> str:
    return f"{seconds:,.2f} s" if seconds >= 1 else ms(seconds)


def rows(section: Any) -> list[Row]:
    """The table rows of the agent-loop group."""
    name = "agent loop"
    if not _ok(section):
        return [Row(name, "agent loop", _why(section))] if section else []
    out: list[Row] = []
    for point in section["points"]:
        turns, variant, ours = point["turns"], point["variant"], point["ours"]
        what = f"{variant}, {turns} turns × {section['message_bytes'] // 1024} KB"
        disk, conversation = ours["disk_bytes"], ours["conversation_bytes"]
        files = ", ".join(f"{k} {_kb(v)}" for k, v in ours["files"].items() if k != "total" and v)
        at_target = turns == BYTES_TURNS
        ratio = _ratio(disk, conversation)
        out.append(Row(name, f"{what}: on disk ({files})", _kb(disk), f"the conversation {_kb(conversation)}", ratio,
                       f"≤ {BYTES_TARGET:g}×" if at_target else "",
                       (ratio is not None and ratio <= BYTES_TARGET) if at_target else None))
        for key in ("dbos", "langgraph"):
            theirs = point.get(key, {})
            if not _ok(theirs):
                out.append(Row(name, f"{what}: on disk", _kb(disk), f"{LABELS[key]}: {_why(theirs)}", None,
                               "≤ 1×" if key == "dbos" and at_target else ""))
                continue
            grown = f", grew {_kb(theirs['grown_bytes'])}" if "grown_bytes" in theirs else ""
            ratio = _ratio(disk, theirs["disk_bytes"])
            need = key == "dbos" and at_target
            out.append(Row(name, f"{what}: on disk", _kb(disk),
                           f"{LABELS[key]} database {_kb(theirs['disk_bytes'])}{grown}", ratio,
                           "≤ 1×" if need else "", (ratio is not None and ratio <= 1) if need else None))
        flat, flat_runs = flat_ratio(ours, 0)
        need = turns == FLAT_TURNS
        late, early = ours["late_turns"], ours["early_turns"]
        others = [f"{LABELS[k]} {_ratio(point[k]['late_seconds'], point[k]['early_seconds']) or 0:.2f}×"
                  for k in ("dbos", "langgraph") if _ok(point.get(k, {})) and point[k].get("early_seconds")]
        out.append(Row(name, f"{what}: mean turn, turns {late[0]:,}–{late[1]:,} ÷ turns {early[0]}–{early[1]}"
                       f"{flat_runs}", f"{ms(ours['late_seconds'])} / {ms(ours['early_seconds'])}", ", ".join(others),
                       flat, f"≤ {FLAT_TARGET:g}×" if need else "",
                       (flat is not None and flat <= FLAT_TARGET) if need else None))
        if ours.get("cpu_early_seconds"):
            # The same windows in the process's CPU time: the runtime's own work, whatever the disk.
            cpu, cpu_runs = flat_ratio(ours, 2)
            out.append(Row(name, f"{what}: CPU per turn, turns {late[0]:,}–{late[1]:,} ÷ turns {early[0]}–{early[1]}"
                           f"{cpu_runs}", f"{ms(ours['cpu_late_seconds'])} / {ms(ours['cpu_early_seconds'])}", "",
                           cpu))
        if "verify_seconds" in ours:
            out.append(Row(name, f"{what}: verify, then the HTML report ({_kb(ours['report_bytes'])})",
                           f"{_s(ours['verify_seconds'])} + {_s(ours['report_seconds'])}", "", None))
        for key in ("dbos", "langgraph"):
            theirs = point.get(key, {})
            if not _ok(theirs):
                if key == "dbos":
                    out.append(Row(name, f"{what}: wall time, fsync on", _s(ours["seconds"]),
                                   f"{LABELS[key]}: {_why(theirs)}", None, "≤ 1×" if need else ""))
                continue
            ratio = _ratio(ours["seconds"], theirs["seconds"])
            target = key == "dbos" and need
            out.append(Row(name, f"{what}: wall time, fsync on", _s(ours["seconds"]),
                           f"{LABELS[key]} {_s(theirs['seconds'])}", ratio, "≤ 1×" if target else "",
                           (ratio is not None and ratio <= 1) if target else None))
    return out


def flat_ratio(ours: dict[str, Any], at: int) -> tuple[Optional[float], str]:
    """Late ÷ early turns of ours (``at``: 0 wall time, 2 CPU time): the median of the runs made at
    the flat-cost length, and how the label names them ("" for one run)."""
    runs = ours.get("flat_runs") or []
    if len(runs) < 2:
        keys = ("late_seconds", "early_seconds") if at == 0 else ("cpu_late_seconds", "cpu_early_seconds")
        return _ratio(ours.get(keys[0], 0), ours.get(keys[1], 0)), ""
    ratios = sorted(r[at] / r[at + 1] for r in runs if r[at + 1])
    each = ", ".join(f"{r[at] / r[at + 1]:.2f}×" for r in runs if r[at + 1])
    return ratios[len(ratios) // 2], f" (median of {len(runs)} runs: {each})"


def issue_table(section: Any) -> str:
    """The issue's table (turns | conversation | ours | LangGraph | DBOS | wall time ours / DBOS), Markdown."""
    if not _ok(section):
        return ""
    lines = ["| variant | turns | conversation | ours on disk | LangGraph + SqliteSaver | DBOS on SQLite (grew) "
             "| wall time: ours / LangGraph / DBOS | turn 951–1,000 ÷ 11–60 (last 50 ÷ 11–60): ours / DBOS |",
             "|---|---|---|---|---|---|---|---|"]
    for point in section["points"]:
        ours, lg, dbos = point["ours"], point.get("langgraph", {}), point.get("dbos", {})

        def flat(p: Any) -> str:
            ratio = flat_ratio(p, 0)[0] if _ok(p) and p.get("early_seconds") else None
            return f"{ratio:.2f}×" if ratio is not None else "—"

        lines.append("| " + " | ".join([
            point["variant"], f"{point['turns']:,}", _kb(ours["conversation_bytes"]),
            f"{_kb(ours['disk_bytes'])} ({ours['disk_bytes'] / ours['conversation_bytes']:.2f}×)",
            _kb(lg["disk_bytes"]) if _ok(lg) else "—",
            f"{_kb(dbos['disk_bytes'])} ({_kb(dbos['grown_bytes'])})" if _ok(dbos) else "—",
            " / ".join([_s(ours["seconds"]), _s(lg["seconds"]) if _ok(lg) else "—",
                        _s(dbos["seconds"]) if _ok(dbos) else "—"]),
            f"{flat(ours)} / {flat(dbos)}"]) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m benchmarks.agent_loop [options]``: the runner with only this group."""
    from .runner import main as runner_main

    return runner_main(["--only", "agent_loop", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
