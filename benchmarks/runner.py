"""``python -m benchmarks``: measure, compare side by side, print a table, write JSON.

Our package is measured in this interpreter (the project venv). Each baseline runs in a
subprocess of the bench venv (``.bench-venv``, see benchmarks/requirements.txt) with
``python -I``, because upstream AbstractRuntime 0.0.1 has the same import name as ours. A
missing bench venv or package makes that baseline "skipped" with the reason; nothing is
ever installed at run time. ``--postgres`` adds the PostgreSQL group (benchmarks/postgres.py:
one throwaway cluster, its own baseline DBOS-on-PostgreSQL); ``python -m benchmarks.postgres``
runs only that group.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from . import (
    agent_loop, cli_latency, harness, ours, ours_async, ours_codefirst, ours_ops, ours_long, ours_proof, ours_recovery,
    postgres,
    report, usage_bench,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BASELINES = {
    "upstream": ("baselines/upstream.py", ["durable", "effects", "flat", "ask"]),
    "langgraph": ("baselines/langgraph_sqlite.py", ["durable"]),
    "dbos": ("baselines/dbos_sqlite.py", ["durable"]),
}
SCENARIOS: dict[str, Callable[[ours.Sizes, str], dict[str, Any]]] = {
    "fsync_floor": ours.fsync_costs,
    "durable_steps": ours.durable_steps,
    "effect_steps": ours.effect_steps,
    "flat_cost": ours.flat_cost,
    "ask_roundtrip": ours_ops.ask_roundtrip,
    "verify": ours_ops.verify_throughput,
    "runs_list": ours_ops.runs_list,
    "startup": ours_ops.startup,
    "recovery": ours_recovery.recovery,
    "long_ledger": ours_long.long_ledger,
    "checkpoint_proof": ours_proof.checkpoint_proof,
    "code_first_replay": ours_codefirst.code_first_replay,
    "async_path": ours_async.async_path,
    "cli_latency": cli_latency.cli_latency,
    "agent_loop": agent_loop.run,
    "usage_accounting": usage_bench.usage_accounting,
}
# Scenarios that run their own baselines (in the bench venv, interleaved with ours): they get the
# bench interpreter and the --baselines selection; the baselines above do not run for them alone.
WITH_OWN_BASELINES = {"agent_loop"}
VENV_HINT = "python -m venv .bench-venv && .bench-venv/bin/pip install -r benchmarks/requirements.txt"


def bench_python(explicit: Optional[str]) -> Optional[Path]:
    """The bench venv's interpreter: ``--bench-python``, ``$ABSTRACTRUNTIME_BENCH_PYTHON`` or .bench-venv."""
    candidate = explicit or os.environ.get("ABSTRACTRUNTIME_BENCH_PYTHON") or str(REPO / ".bench-venv" / "bin" / "python")
    path = Path(candidate)
    return path if path.exists() else None


def run_baseline(python: Path, name: str, sizes: ours.Sizes, work: str) -> dict[str, Any]:
    """One baseline script in its own process; its JSON document, or ``{"error": ...}``."""
    script, scenarios = BASELINES[name]
    spec = {"steps": sizes.steps, "effect_steps": sizes.effect_steps, "reps": sizes.baseline_reps,
            "flat_lengths": sizes.flat_lengths, "flat_steps": sizes.flat_steps, "roundtrips": sizes.roundtrips,
            "scenarios": scenarios, "tmp": work}
    return harness.run_json_script(python, HERE / script, spec, cwd=work)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    fs = ""
    try:
        target = Path(tempfile.gettempdir()).resolve()
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if str(target).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fs = parts[1], f"{parts[2]} ({parts[0]} on {parts[1]})"
    except OSError:
        pass
    import abstractruntime

    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cpus": os.cpu_count(), "filesystem": fs, "abstractruntime": abstractruntime.__version__}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test that every scenario works")
    parser.add_argument("--baselines", default="all",
                        help="all, none, or a comma list of: " + ", ".join(BASELINES))
    parser.add_argument("--only", default="", help="comma list of scenarios to run: "
                        + ", ".join([*SCENARIOS, *postgres.PG_SCENARIOS]))
    parser.add_argument("--postgres", action="store_true",
                        help="also run the PostgreSQL group on a throwaway cluster (needs initdb and psycopg; "
                             "all its scenarios unless --only names some); python -m benchmarks.postgres runs "
                             "only that group")
    parser.add_argument("--bench-python", help="interpreter of the bench venv [default: .bench-venv/bin/python]")
    parser.add_argument("--output", default=str(HERE / "results"), help="folder for the JSON results")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    """Run everything asked for; exit 0 unless the runner itself broke (targets never fail it)."""
    from rich.console import Console

    args = parse_args(argv)
    console = Console(stderr=True)
    sizes = ours.Sizes.quick() if args.quick else ours.Sizes()
    named = [s for s in args.only.split(",") if s]
    only = [s for s in named if s in SCENARIOS] if named else list(SCENARIOS)
    pg_only = [s for s in named if s in postgres.PG_SCENARIOS] or list(postgres.PG_SCENARIOS)
    with_pg = args.postgres or any(s in postgres.PG_SCENARIOS for s in named)
    unknown = set(named) - set(SCENARIOS) - set(postgres.PG_SCENARIOS)
    wanted = list(BASELINES) if args.baselines == "all" else [b for b in args.baselines.split(",") if b and b != "none"]
    unknown |= set(wanted) - set(BASELINES)
    if unknown:
        console.print(f"[red]unknown scenario or baseline: {', '.join(sorted(unknown))}[/red]")
        return 2
    started = dt.datetime.now(dt.timezone.utc)
    results: dict[str, Any] = {"format": 1, "started_at": started.isoformat(), "quick": args.quick,
                               "machine": machine(), "sizes": vars(sizes), "scenarios": {}, "baselines": {}}
    failed = False
    python = bench_python(args.bench_python)
    with tempfile.TemporaryDirectory(prefix="abstractruntime-bench-") as work:
        for name, fn in SCENARIOS.items():
            if name not in only:
                results["scenarios"][name] = {"skipped": "not selected (--only)"}
                continue
            console.print(f"[dim]measuring {name}…[/dim]")
            try:
                if name in WITH_OWN_BASELINES:
                    results["scenarios"][name] = agent_loop.run(
                        sizes, work, bench_python=python, baselines=set(wanted),
                        log=lambda message: console.print(message, style="dim", markup=False, highlight=False))
                else:
                    results["scenarios"][name] = fn(sizes, work)
            except Exception as exc:  # report and go on: one broken scenario must not hide the others
                failed = True
                results["scenarios"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                console.print(traceback.format_exc(), markup=False)
        for name in BASELINES:
            if name not in wanted:
                results["baselines"][name] = {"skipped": "not selected (--baselines)"}
            elif not only:
                results["baselines"][name] = {"skipped": "not selected (no file-store scenario selected)"}
            elif set(only) <= WITH_OWN_BASELINES:
                results["baselines"][name] = {"skipped": "not selected (the selected scenarios run their own)"}
            elif python is None:
                results["baselines"][name] = {"skipped": f"no bench venv (create it: {VENV_HINT})"}
            else:
                console.print(f"[dim]measuring baseline {name} in {python}…[/dim]")
                results["baselines"][name] = run_baseline(python, name, sizes, work)
            section = results["baselines"][name]
            if "skipped" in section or "error" in section:
                console.print(f"[yellow]baseline {name}: {section.get('skipped') or section.get('error')}[/yellow]")
        if with_pg:
            results["postgres"], pg_failed = postgres.run_group(
                sizes, work, pg_only, bench_python=python, baselines=set(wanted),
                log=lambda message: console.print(message, style="dim", markup=False, highlight=False))
            failed = failed or pg_failed
            if "skipped" in results["postgres"]:
                console.print(f"[yellow]PostgreSQL group: {results['postgres']['skipped']}[/yellow]")
        else:
            results["postgres"] = {"skipped": "not selected (--postgres)"}
    # Scenarios left out by --only are in the JSON, not in the table.
    rows = [r for r in report.build_rows(results) if not r.ours.startswith("skipped: not selected")]
    results["table"] = [r.to_dict() for r in rows]
    results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ("-postgres" if with_pg and not only else "") + ("-quick" if args.quick else "")
    out_path = out_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}{suffix}.json"
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    out_console = Console() if sys.stdout.isatty() else Console(width=220)
    out_console.print(report.render_rich(rows, f"abstractruntime benchmarks ({'quick' if args.quick else 'full'})"))
    if args.markdown:
        print(report.render_markdown(rows))
        table = agent_loop.issue_table(results["scenarios"].get("agent_loop"))
        if table:
            print("\n" + table)
    print(f"results: {out_path}", file=sys.stderr)
    return 1 if failed else 0
