"""Run the reliability battery in its long form and print the figures for docs/reliability.md.

    python -m tests.reliability.run                      # everything, long form
    python -m tests.reliability.run --kills 1000 --only kill
    python -m tests.reliability.run --agent-kills 500 --only agentkill   # the agent's loop
    python -m tests.reliability.run --only crash,race --json
    python -m tests.reliability.run --only sigterm --sigterms 100     # folder and PostgreSQL
    python -m tests.reliability.run --only stuck                      # kills at every step of resume/emit
    python -m tests.reliability.run --only positions --position-rounds 20   # 50 runs at once, both stores

The kill, crash and race batteries run here directly (same code as the pytest tests);
the stateful, fuzz and bad-input batteries run through pytest with their counts raised.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import crashsim, killloop, positions, racing, sigterm, stuck

HERE = Path(__file__).resolve().parent
BATTERIES = ("kill", "agentkill", "kill-flow", "crash", "race", "sigterm", "stuck", "positions", "stateful",
             "badinput", "fuzz", "atheris")
FSYNC_SITES = {
    "append_bytes": ("append_bytes",),
    "atomic_write_bytes file": ("atomic_write_bytes",),
    "every fsync_dir": ("fsync_dir",),
    "atomic_write_bytes dir": ("fsync_dir", "atomic_write_bytes"),
    "save_checkpoint runs/": ("fsync_dir", "save_checkpoint"),
    "_append_run new ledger": ("fsync_dir", "_append_run"),
}


def _pytest(test_file: str, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / test_file)],
                          cwd=killloop.IMPORT_BASE, env={**os.environ, **env}, capture_output=True, text=True)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|xfailed|xpassed|skipped|error)", summary)}
    return {"exit": proc.returncode, "summary": summary, **counts, "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the chosen batteries, print a report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--agent-kills", type=int, default=300, help="kills of the agent-loop workload")
    parser.add_argument("--crash-samples", type=int, default=10, help="random crash states per crash point")
    parser.add_argument("--race-rounds", type=int, default=50)
    parser.add_argument("--sigterms", type=int, default=100, help="SIGTERMs per store (folder, PostgreSQL)")
    parser.add_argument("--position-rounds", type=int, default=20, help="rounds of 50 runs per store")
    parser.add_argument("--stateful-examples", type=int, default=2000)
    parser.add_argument("--fuzz-examples", type=int, default=5000)
    parser.add_argument("--atheris-seconds", type=int, default=60, help="per target (needs atheris)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=",".join(BATTERIES), help=f"comma-separated subset of {BATTERIES}")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    report: dict[str, Any] = {}
    ok = True
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        work = Path(tmp)
        if "kill" in only:
            stats = killloop.kill_loop(work / "kill", kills=args.kills, seed=args.seed)
            report["kill"] = stats.to_dict()
            ok &= not stats.failures
        if "agentkill" in only:
            stats = killloop.kill_loop(work / "agentkill", kills=args.agent_kills, seed=args.seed, kind="agent")
            report["agentkill"] = stats.to_dict()
        if "kill-flow" in only:  # the same battery over the code-first twin of the workload
            stats = killloop.kill_loop(work / "kill-flow", kills=args.kills, seed=args.seed, kind="flow")
            report["kill-flow"] = stats.to_dict()
            ok &= not stats.failures
        if "crash" in only:
            started = time.perf_counter()
            crash = crashsim.simulate(work / "crash", samples=args.crash_samples, seed=args.seed)
            entry = crash.to_dict()
            entry["violations"] = entry["violations"][:20]
            entry["seconds"] = round(time.perf_counter() - started, 1)
            entry["fsync_removed_caught"] = {}
            for name, site in FSYNC_SITES.items():
                found = crashsim.simulate(work / "crash-drop", samples=8, seed=args.seed, modes=("durable",),
                                          drop_fsync_in=frozenset({site}), stop_after=1, recover=False)
                entry["fsync_removed_caught"][name] = bool(found.violations)
            report["crash"] = entry
            ok &= not crash.violations and all(entry["fsync_removed_caught"].values())
        if "race" in only:
            race: dict[str, Any] = {}
            for workers in (2, 4, 8):
                started = time.perf_counter()
                resume = racing.race_resume(work / f"race-r{workers}", workers, args.race_rounds)
                due, doubles = racing.race_tick_due(work / f"race-d{workers}", workers, args.race_rounds)
                race[f"x{workers}"] = {"resume": resume.to_dict(), "tick_due": due.to_dict(),
                                       "tick_due_reported_twice": doubles,
                                       "seconds": round(time.perf_counter() - started, 1)}
                ok &= not resume.failures and not due.failures
            report["race"] = race
        if "sigterm" in only:
            report["sigterm"] = _sigterm(work / "sigterm", args.sigterms, args.seed)
            ok &= all(not entry.get("failures") for entry in report["sigterm"].values())
        if "stuck" in only:
            report["stuck"] = _with_postgres(work / "stuck", lambda root, url: stuck.stuck_battery(
                root, store_url=url).to_dict())
            ok &= all(not entry.get("failures") for entry in report["stuck"].values())
        if "positions" in only:
            report["positions"] = _with_postgres(work / "positions", lambda root, url: positions.positions_battery(
                root, store_url=url, rounds=args.position_rounds).to_dict())
            ok &= all(not entry.get("failures") and not any(entry.get(k) for k in positions.BAD)
                      for entry in report["positions"].values())
        if "stateful" in only:
            report["stateful"] = _pytest("test_rel_stateful.py",
                                         {"RELIABILITY_STATEFUL_EXAMPLES": str(args.stateful_examples)})
        if "badinput" in only:
            report["badinput"] = _pytest("test_rel_bad_input.py", {})
        if "fuzz" in only:
            report["fuzz"] = _pytest("test_rel_fuzz.py", {"RELIABILITY_FUZZ_EXAMPLES": str(args.fuzz_examples)})
        for name in ("stateful", "badinput", "fuzz"):
            if name in report:
                ok &= report[name]["exit"] == 0
        if "atheris" in only:
            report["atheris"] = _atheris(args.atheris_seconds)
            ok &= all(v.get("exit") in (0, None) for v in report["atheris"].values())
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        for name, entry in report.items():
            print(f"== {name}\n{json.dumps(entry, indent=2, default=str)}")
    return 0 if ok else 1


def _sigterm(work: Path, signals: int, seed: int) -> dict[str, Any]:
    """The SIGTERM battery on a folder store and, when PostgreSQL is installed, on a throwaway cluster."""
    return _with_postgres(work, lambda root, url: sigterm.sigterm_battery(
        root, store_url=url, signals=signals, seed=seed).to_dict())


def _with_postgres(work: Path, battery: Any) -> dict[str, Any]:
    """``battery(root, url)`` on a folder store (``url`` None) and on a throwaway PostgreSQL cluster."""
    import importlib.util

    out = {"folder": battery(work / "folder", None)}
    spec = importlib.util.spec_from_file_location("abstractruntime_tests_pg_cluster", HERE.parent / "postgres" /
                                                  "cluster.py")
    assert spec is not None and spec.loader is not None
    cluster_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cluster_module)
    bindir = cluster_module.find_bindir()
    if bindir is None:
        out["postgresql"] = {"skipped": "PostgreSQL is not installed"}
        return out
    cluster = cluster_module.Cluster(bindir)
    try:
        out["postgresql"] = battery(work / "pg", cluster.start())
    finally:
        cluster.stop()
    return out


def _atheris(seconds: int) -> dict[str, Any]:
    try:
        import atheris  # noqa: F401  (only probing that it is installed)
    except ImportError:
        return {"skipped": {"exit": None, "reason": "atheris is not installed"}}
    out: dict[str, Any] = {}
    for target in ("ledger", "checkpoint", "snapshot", "bookmarks"):
        # libFuzzer ends the process from C (no Python clean-up): its temporary files go under
        # a directory this process owns and removes.
        with tempfile.TemporaryDirectory(prefix=f"atheris-{target}-") as tmp:
            proc = subprocess.run([sys.executable, "-m", f"{killloop.PACKAGE}.atheris_fuzz", target, str(seconds)],
                                  cwd=killloop.IMPORT_BASE, capture_output=True, text=True,
                                  env={**os.environ, "TMPDIR": tmp})
        runs = re.findall(r"Done (\d+) runs", proc.stderr)
        out[target] = {"exit": proc.returncode, "runs": int(runs[-1]) if runs else None,
                       "tail": proc.stderr.strip().splitlines()[-1:] if proc.returncode else []}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
