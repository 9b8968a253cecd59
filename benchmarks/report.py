"""Turn raw measurements into rows of ratios with their targets, and render them.

A row compares one measurement with a yardstick measured *in the same run* (an fsync, a
baseline, a bare loop, the bare interpreter), so its ratio means something on any machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    measure: str
    ours: str
    versus: str = ""
    ratio: Optional[float] = None
    target: str = ""
    met: Optional[bool] = None  # None: no target, or the comparison could not be made

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


def ms(seconds: float) -> str:
    """Seconds as milliseconds text."""
    return f"{seconds * 1e3:,.3f} ms" if seconds < 0.01 else f"{seconds * 1e3:,.1f} ms"


def rate(value: float, unit: str) -> str:
    """A rate with thousands separators."""
    return f"{value:,.0f} {unit}"


def _ok(section: Any) -> bool:
    return isinstance(section, dict) and "skipped" not in section and "error" not in section


def _why(section: Any) -> str:
    if isinstance(section, dict):
        return f"skipped: {section.get('skipped') or section.get('error')}"
    return "skipped: not measured"


def _ratio(a: float, b: float) -> Optional[float]:
    return a / b if b else None


def build_rows(results: dict[str, Any]) -> list[Row]:
    """Every row of the table, from the ``scenarios`` and ``baselines`` of a results document."""
    sc, base = results["scenarios"], results["baselines"]
    rows: list[Row] = []
    floor = sc.get("fsync_floor", {})
    append = floor.get("append_fsync_seconds", 0.0)
    if _ok(floor):
        rows.append(Row("fsync floor", "append + fsync (one ledger line)", ms(append)))
        rows.append(Row("fsync floor", "atomic replace + fsyncs (one checkpoint)",
                        ms(floor["atomic_replace_fsync_seconds"])))
    up, lg, dbos = (base.get(k, {}) for k in ("upstream", "langgraph", "dbos"))
    durable = sc.get("durable_steps", {})
    if _ok(durable) and "floor" in durable:  # the floor measured right before: same disk weather
        append = durable["floor"]["append_fsync_seconds"]
    rows += _durable_rows(durable, append, up, lg, dbos)
    rows += _effect_rows(sc.get("effect_steps", {}), floor, up)
    rows += _flat_rows(sc.get("flat_cost", {}), up)
    rows += _ask_rows(sc.get("ask_roundtrip", {}), up)
    rows += _verify_rows(sc.get("verify", {}))
    rows += _list_rows(sc.get("runs_list", {}))
    rows += _startup_rows(sc.get("startup", {}))
    rows += _recovery_rows(sc.get("recovery", {}))
    from .ours_long import rows as long_rows  # here: that module builds its rows with Row

    rows += long_rows(sc.get("long_ledger", {}))
    from .ours_proof import rows as proof_rows  # here: that module builds its rows with Row

    rows += proof_rows(sc.get("checkpoint_proof", {}))
    rows += _replay_rows(sc.get("code_first_replay", {}))
    rows += _async_rows(sc.get("async_path", {}))
    from .cli_latency import rows as cli_latency_rows  # here: that module builds its rows with Row

    rows += cli_latency_rows(sc.get("cli_latency", {}))
    from .usage_bench import rows as usage_rows  # here: that module builds its rows with Row

    rows += usage_rows(sc.get("usage_accounting", {}))
    rows += _bytes_rows(sc.get("durable_steps", {}), up, lg, dbos)
    from .agent_loop import rows as agent_rows  # here: that module builds its rows with Row

    section = sc.get("agent_loop")
    if not (isinstance(section, dict) and str(section.get("skipped", "")).startswith("not selected")):
        rows += agent_rows(section)
    from .postgres import build_rows as postgres_rows  # here: that module builds its rows with Row

    rows += postgres_rows(results.get("postgres"))
    return rows


def _durable_rows(d: Any, append: float, up: Any, lg: Any, dbos: Any) -> list[Row]:
    name = "durable steps"
    if not _ok(d):
        return [Row(name, "linear workflow", _why(d))]
    n = d["steps"]
    per, group, off = d["per_step_commit"], d["group_commit"], d["fsync_off"]
    rows = [
        Row(name, f"{n} pure steps, fsync, commit every step (tick max_steps=1): cost/step",
            ms(per["step_seconds"]), f"one append+fsync {ms(append)}", _ratio(per["step_seconds"], append),
            "≤ 2×", per["step_seconds"] <= 2 * append if append else None),
        Row(name, f"{n} pure steps, fsync, group commit (default): cost/step", ms(group["step_seconds"]),
            f"one append+fsync {ms(append)}", _ratio(group["step_seconds"], append), "≤ 1.5×",
            group["step_seconds"] <= 1.5 * append if append else None),
        Row(name, f"{n} pure steps, fsync off", rate(off["steps_per_s"], "steps/s"), "", None,
            "≥ 20,000 steps/s", off["steps_per_s"] >= 20_000),
    ]
    ours = group["steps_per_s"]
    for label, section, key, need in (("upstream 0.0.1 (no fsync)", up, "durable", 5.0),
                                      ("LangGraph+SqliteSaver (sync)", lg, "durable", 3.0),
                                      ("LangGraph+SqliteSaver (async)", lg, "durable_async", None),
                                      ("DBOS on SQLite", dbos, "durable", None)):
        measure = f"{n} pure steps, default durability"
        if _ok(section) and key in section:
            theirs = section[key]["steps_per_s"]
            ratio = ours / theirs
            rows.append(Row(name, measure, rate(ours, "steps/s"), f"{label} {rate(theirs, 'steps/s')}", ratio,
                            f"≥ {need:g}×" if need else "", ratio >= need if need else None))
        elif need:
            rows.append(Row(name, measure, rate(ours, "steps/s"), f"{label}: {_why(section)}", None, f"≥ {need:g}×"))
    return rows


def _effect_rows(e: Any, floor: Any, up: Any) -> list[Row]:
    name = "effect steps"
    if not _ok(e):
        return [Row(name, "effect workflow", _why(e))]
    measure = f"{e['steps']} effect steps, fsync"
    rows = []
    floor = e.get("floor", floor)
    if _ok(floor):
        append = floor["append_fsync_seconds"]
        ratio = _ratio(e["step_seconds"], append)
        rows.append(Row(name, f"{measure}: cost/step", ms(e["step_seconds"]), f"one append+fsync {ms(append)}",
                        ratio, "≤ 2×", ratio <= 2 if ratio is not None else None))
    if _ok(up) and "effects" in up:
        theirs = up["effects"]["steps_per_s"]
        ratio = e["steps_per_s"] / theirs
        rows.append(Row(name, measure, rate(e["steps_per_s"], "steps/s"),
                        f"upstream 0.0.1 (no fsync) {rate(theirs, 'steps/s')}", ratio, "≥ 15×", ratio >= 15))
    else:
        rows.append(Row(name, measure, rate(e["steps_per_s"], "steps/s"), f"upstream: {_why(up)}", None, "≥ 15×"))
    return rows


def _flat_ratio(points: list[dict[str, Any]]) -> tuple[Optional[float], str]:
    if len(points) < 2:
        return None, ""
    lo = next((p for p in points if p["ledger_length"] == 100), points[0])
    hi = next((p for p in points if p["ledger_length"] == 10_000), points[-1])
    return _ratio(hi["step_seconds"], lo["step_seconds"]), f"{hi['ledger_length']:,} vs {lo['ledger_length']:,}"


def _flat_rows(f: Any, up: Any) -> list[Row]:
    name = "flat cost"
    if not _ok(f):
        return [Row(name, "cost/step vs ledger length", _why(f))]
    rows = []
    for durability in ("fsync", "none"):
        ratio, span = _flat_ratio(f[durability])
        last = f[durability][-1]
        rows.append(Row(name, f"effect step at ledger length {span} (ours, {durability})",
                        ms(last["step_seconds"]), f"same at {f[durability][0]['ledger_length']:,}", ratio,
                        "≤ 1.2×", ratio <= 1.2 if ratio is not None else None))
    if _ok(up) and "flat" in up:
        ratio, span = _flat_ratio(up["flat"]["points"])
        last = up["flat"]["points"][-1]
        rows.append(Row(name, f"effect step at ledger length {span} (upstream 0.0.1)", ms(last["step_seconds"]),
                        "same at its shortest ledger", ratio))
    return rows


def _ask_fsyncs_needed(fsyncs: dict[str, int]) -> bool:
    """Whether a round trip's fsyncs are exactly what POSIX needs for a new run answered once:
    the directory entries of the new run directory and of its new ledger (each made durable by
    an fsync of its directory), and the three ledger appends whose durability the caller relies
    on (the run ``start`` returns, the wait ``tick`` reports, the answer ``resume`` reports)."""
    return fsyncs == {"directory": 2, "ledger.jsonl": 3}


def _ask_rows(a: Any, up: Any) -> list[Row]:
    name = "ask_user round trip"
    if not _ok(a):
        return [Row(name, "start → wait → resume → complete", _why(a))]
    api = a["api"]["seconds"]
    rows = []
    fsyncs = a["api"].get("fsyncs") or {}
    needed = _ask_fsyncs_needed(fsyncs)
    if _ok(up) and "ask" in up:
        theirs = up["ask"]["seconds"]
        ratio = _ratio(api, theirs)
        met = (ratio <= 2 or needed) if ratio is not None else None
        rows.append(Row(name, "API (fsync)", ms(api), f"upstream 0.0.1 API (no fsync) {ms(theirs)}",
                        ratio, "≤ 2×, or only the fsyncs POSIX needs", met))
        if _ok(a.get("api_no_fsync")):
            bare = a["api_no_fsync"]["seconds"]
            rows.append(Row(name, "API, fsync off (durability none)", ms(bare),
                            f"upstream 0.0.1 API (no fsync) {ms(theirs)}", _ratio(bare, theirs)))
    else:
        rows.append(Row(name, "API (fsync)", ms(api), f"upstream: {_why(up)}"))
    if fsyncs:
        told = ", ".join(f"{n} {what}" for what, n in sorted(fsyncs.items()))
        rows.append(Row(name, "API: fsyncs per round trip", f"{sum(fsyncs.values())} ({told})",
                        "a new run's POSIX minimum: 2 directories + 3 ledger appends", None,
                        "only those", needed))
    cli = a.get("cli", {})
    if _ok(cli):
        rows.append(Row(name, "CLI: run --no-input, then resume --answer", ms(cli["seconds"]),
                        f"API {ms(api)}", _ratio(cli["seconds"], api)))
    else:
        rows.append(Row(name, "CLI: run --no-input, then resume --answer", _why(cli)))
    return rows


def _verify_rows(v: Any) -> list[Row]:
    name = "verify"
    if not _ok(v):
        return [Row(name, "records/s", _why(v))]
    measure = f"{v['records']:,} records"
    rows = [
        Row(name, f"{measure}, {v.get('jobs', 1)} processes" if "jobs" in v else measure,
            rate(v["records_per_s"], "records/s"),
            f"spread {ms(v['seconds_min'])}–{ms(v['seconds_max'])}" if "seconds_min" in v else "", None,
            "≥ 150,000 records/s", v["records_per_s"] >= 150_000),
        Row(name, f"{measure}: time", ms(v["seconds"]), f"bare json+sha256 loop {ms(v['bare_seconds'])}",
            _ratio(v["seconds"], v["bare_seconds"]), "≤ 3×", v["seconds"] <= 3 * v["bare_seconds"]),
    ]
    if "one_process_seconds" in v:
        rows.append(Row(name, f"{measure}, one process (--jobs 1)", rate(v["one_process_records_per_s"], "records/s"),
                        f"bare loop {rate(v['bare_records_per_s'], 'records/s')} (spread "
                        f"{ms(v['bare_seconds_min'])}–{ms(v['bare_seconds_max'])})",
                        _ratio(v["one_process_seconds"], v["bare_seconds"])))
        rows.append(Row(name, f"{measure}: CPU time, every process", ms(v["cpu_seconds"]),
                        f"one process {ms(v['one_process_seconds'])} wall"))
    many = v.get("store")
    if _ok(many):
        rows.append(Row(name, f"--all: {many['runs']} runs, {many['records']:,} records",
                        rate(many["records_per_s"], "records/s"),
                        f"one process {rate(many['one_process_records_per_s'], 'records/s')} (spread "
                        f"{ms(many['seconds_min'])}–{ms(many['seconds_max'])})",
                        _ratio(many["one_process_seconds"], many["seconds"])))
    return rows


def _list_rows(lst: Any) -> list[Row]:
    name = "runs list --status waiting"
    if not _ok(lst):
        return [Row(name, "list", _why(lst))]
    rows = []
    for p in lst["points"]:
        big = p["runs"] >= 100_000
        rows.append(Row(name, f"{p['runs']:,} runs, library (index built)", ms(p["query_seconds"]), "", None,
                        "≤ 50 ms" if big else "", p["query_seconds"] <= 0.050 if big else None))
        first, write = p["first_query_with_index_build_seconds"], p["write_files_seconds"]
        ratio = _ratio(first, write)
        rows.append(Row(name, f"{p['runs']:,} runs, first query (builds the index)", ms(first),
                        f"writing the run files {ms(write)}", ratio, "≤ 1×" if big else "",
                        (ratio is not None and ratio <= 1) if big else None))
        if "cli_seconds" in p:
            rows.append(Row(name, f"{p['runs']:,} runs, CLI process", ms(p["cli_seconds"]), "", None,
                            "< 1 s" if big else "", p["cli_seconds"] < 1 if big else None))
    if "cli" in lst:
        rows.append(Row(name, "CLI", _why(lst["cli"])))
    return rows


def _startup_rows(s: Any) -> list[Row]:
    name = "start-up"
    if not _ok(s):
        return [Row(name, "processes", _why(s))]
    bare = s["python_pass"]["seconds"]
    rows = [Row(name, "python -c pass", ms(bare))]
    # (key, label, absolute limit, limit as a ratio to python -c pass)
    for key, label, limit, times in (("import_abstractruntime", "import abstractruntime", 0.040, None),
                                     ("import_kernel_stdlib", "the standard-library modules the kernel needs",
                                      None, None),
                                     ("import_runtime_and_store", "from abstractruntime import Runtime, FileStore",
                                      None, 1.8),
                                     ("first_use", "then FileStore(dir).runtime() (first use)", None, None),
                                     ("cli_help", "abstractruntime --help", 0.250, 4.0)):
        if key not in s:
            continue  # a result from before this row was measured
        entry = s[key]
        if not _ok(entry):
            rows.append(Row(name, label, _why(entry)))
            continue
        t = entry["seconds"]
        added = max(t - bare, 0.0)
        ratio = _ratio(t, bare)
        targets, met = [], []
        if limit:
            targets.append(f"< {limit * 1e3:.0f} ms")
            met.append(t < limit)
        if times:
            targets.append(f"≤ {times:g}×")
            met.append(ratio is not None and ratio <= times)
        rows.append(Row(name, label, f"{ms(t)} ({ms(added)} over python)", f"python -c pass {ms(bare)}",
                        ratio, ", ".join(targets), all(met) if met else None))
    return rows


def _bytes_rows(d: Any, up: Any, lg: Any, dbos: Any) -> list[Row]:
    name = "bytes on disk"
    if not _ok(d):
        return []
    ours = d["group_commit"]["bytes_per_step"]
    rows = [Row(name, f"per step, {d['steps']}-step workflow (ledger, deltas included)", f"{ours:,.0f} B", "",
                None, "≤ 1 KB", ours <= 1024)]
    for label, section in (("LangGraph SqliteSaver", lg), ("upstream 0.0.1", up), ("DBOS SQLite", dbos)):
        if _ok(section) and "durable" in section:
            theirs = section["durable"]["bytes_per_step"]
            rows.append(Row(name, f"per step, {d['steps']}-step workflow", f"{ours:,.0f} B",
                            f"{label} {theirs:,.0f} B", _ratio(ours, theirs)))
        else:
            rows.append(Row(name, f"per step, {d['steps']}-step workflow", f"{ours:,.0f} B", f"{label}: {_why(section)}"))
    return rows


def _recovery_rows(r: Any) -> list[Row]:
    name = "recovery"
    if not _ok(r):
        return [Row(name, "long run", _why(r))]
    measure = f"{r['records']:,} records, checkpoint {r['checkpoint_behind']:,} behind"
    return [
        Row(name, f"{measure}: open + one step", ms(r["open_and_step_seconds"]), "", None, "< 100 ms",
            r["open_and_step_seconds"] < 0.1),
        Row(name, f"state_at, {r['state_at_samples']} positions: slowest", ms(r["state_at_max_seconds"]),
            f"median {ms(r['state_at_median_seconds'])}", None, "< 200 ms", r["state_at_max_seconds"] < 0.2),
    ]


def _replay_rows(r: Any) -> list[Row]:
    name = "code-first replay"
    if not _ok(r):
        return [Row(name, "resume", _why(r))]
    measure = f"{r['steps']:,} recorded steps ({r['records']:,} records)"
    return [
        Row(name, f"{measure}: resume, warm process", ms(r["warm_seconds"]), f"slowest {ms(r['warm_max_seconds'])}",
            None, "< 150 ms", r["warm_seconds"] < 0.15),
        Row(name, f"{measure}: first resume after recording them", ms(r["catch_up_seconds"])),
        Row(name, f"{measure}: resume, new process (ledger chain-checked)", ms(r["cold_seconds"])),
    ]


def _async_rows(a: Any) -> list[Row]:
    name = "async path"
    if not _ok(a):
        return [Row(name, "atick", _why(a))]
    c, t, p = a["concurrency"], a["tool_calls"], a["pure_steps"]
    ratio = c["concurrent"]["runs_per_s"] / c["serial"]["runs_per_s"]
    tool_ratio = t["seconds"] / t["tool_seconds"]
    step_ratio = p["async"]["step_seconds"] / p["sync"]["step_seconds"]
    return [
        Row(name, f"{c['concurrent']['runs']:,} runs, one {c['effect_wait_s'] * 1000:g} ms effect each, "
            f"--concurrency 100 (all verified: {c['all_verified']})", rate(c["concurrent"]["runs_per_s"], "runs/s"),
            f"--concurrency 1 {rate(c['serial']['runs_per_s'], 'runs/s')}", ratio, "≥ 50×", ratio >= 50),
        Row(name, f"tool_calls: {t['tools']} async tools of {t['tool_seconds'] * 1000:g} ms", ms(t["seconds"]),
            f"one tool {ms(t['tool_seconds'])}", tool_ratio, "≤ 1.3×", tool_ratio <= 1.3),
        Row(name, f"{p['steps']} pure steps: cost/step, atick", ms(p["async"]["step_seconds"]),
            f"tick {ms(p['sync']['step_seconds'])}", step_ratio, "≤ 1.3×", step_ratio <= 1.3),
    ]


def verdict(met: Optional[bool]) -> str:
    """Plain-text verdict of a row."""
    return {True: "yes", False: "NO", None: ""}[met]


def render_markdown(rows: list[Row]) -> str:
    """The table as GitHub Markdown (what docs/performance.md shows)."""
    lines = ["| scenario | measure | ours | compared with | ratio | target | met |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:,.2f}×" if r.ratio is not None else ""
        cells = (r.scenario, r.measure, r.ours, r.versus, ratio, r.target, verdict(r.met))
        # A cell a scenario left as None (an empty "compared with") renders empty, never crashes
        # the report after minutes of measuring.
        lines.append("| " + " | ".join((c or "").replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def render_rich(rows: list[Row], title: str) -> Any:
    """The table as a :class:`rich.table.Table`."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col, kw in (("scenario", {"style": "bold"}), ("measure", {}), ("ours", {"justify": "right"}),
                    ("compared with", {}), ("ratio", {"justify": "right"}), ("target", {}), ("met", {})):
        table.add_column(col, **kw)
    for r in rows:
        met = {True: "[green]yes[/green]", False: "[red]NO[/red]", None: ""}[r.met]
        table.add_row(r.scenario, r.measure, r.ours, r.versus or "",
                      f"{r.ratio:,.2f}×" if r.ratio is not None else "", r.target, met)
    return table
