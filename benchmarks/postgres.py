"""The PostgreSQL benchmark group: scenarios against ONE throwaway PostgreSQL cluster.

``python -m benchmarks --postgres`` runs it after the file-store scenarios;
``python -m benchmarks.postgres`` runs only it (same options, same results/report flow: the
section ``"postgres"`` of the results document, rows in the same table).

The cluster is the one the tests start (tests/postgres/cluster.py, imported by path, not
copied): ``initdb`` into a temporary directory, the server on a free 127.0.0.1 port, as root
run as the ``postgres`` OS user, stopped and removed at the end, even on error. The tests turn
``fsync`` off; here it is a parameter of :func:`start_cluster`, **on** by default (the server's
own default, with ``full_page_writes`` and ``synchronous_commit``): a commit is durable.

Adding a scenario (fleet scaling, kill -9 of a worker, emit → pickup latency, ...):

1. write ``def my_scenario(ctx: PgContext) -> dict`` returning JSON-safe measurements (use
   ``ctx.create_database(name)`` for a fresh database, ``ctx.sizes`` for sizes — add fields to
   :class:`benchmarks.ours.Sizes` with small ``quick()`` values —, ``ctx.work`` for scratch
   files, ``ctx.counters(database)`` for server-side counts, ``ctx.bench_python`` /
   ``ctx.baseline_selected(name)`` / :func:`benchmarks.harness.run_json_script` for a baseline
   in the bench venv; worker processes run ``sys.executable`` with ``ctx.url(database)``);
2. write ``def my_rows(section: dict) -> list[Row]`` (``section`` is what the scenario
   returned; :class:`benchmarks.report.Row`: scenario | measure | ours | compared with |
   ratio | target | met);
3. add ``"pg_my_scenario": PgScenario(my_scenario, my_rows, "one line")`` to
   :data:`PG_SCENARIOS`. ``--only pg_my_scenario`` selects it; the smoke test
   (tests/packaging/test_benchmarks_smoke.py) runs every registered scenario with ``--quick``.

A scenario that raises is reported as ``{"error": ...}`` and the others still run.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from . import harness, workloads
from .ours import Sizes
from .pg_fleet import FLEET_SCENARIOS
from .report import Row, _ok, _ratio, _why, ms, rate

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLUSTER_PY = REPO / "tests" / "postgres" / "cluster.py"
DBOS_SCRIPT = HERE / "baselines" / "dbos_postgres.py"
# Server counters read before and after a measured block (see PgContext.counters).
COUNTERS = ("xact_commit", "tup_inserted", "tup_updated", "tup_deleted", "tup_returned", "tup_fetched")
WAL_COUNTERS = ("wal_records", "wal_bytes", "wal_write", "wal_sync")


class ClusterUnavailable(Exception):
    """No PostgreSQL server binaries (``initdb``) or no psycopg: the group is skipped."""


def cluster_module() -> types.ModuleType:
    """tests/postgres/cluster.py, loaded by path (tests/ is not a package), as tests/conftest.py does."""
    spec = importlib.util.spec_from_file_location("abstractruntime_bench_pg_cluster", CLUSTER_PY)
    if spec is None or spec.loader is None or not CLUSTER_PY.exists():
        raise ClusterUnavailable(f"{CLUSTER_PY} is missing (run from a clone of the repository)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_cluster(*, fsync: bool = True, settings: tuple[str, ...] = ()) -> Any:
    """A started throwaway cluster (``.stop()`` it); ``fsync=False`` is the tests' setting.
    ``settings``: more ``name=value`` server options (e.g. a profile's
    ``shared_preload_libraries=pg_stat_statements``).

    tests/postgres/cluster.py starts the server with ``-c fsync=off -c full_page_writes=off``;
    with ``fsync=True`` both are turned back on by later ``-c`` options on the same command
    line (the last one wins), and the server is asked what it runs with, so a change in
    cluster.py can never make these numbers silently fsync-free.
    """
    try:
        import psycopg
    except ImportError as exc:
        raise ClusterUnavailable(f"psycopg is not installed ({exc}): pip install -e '.[postgres]'") from None
    module = cluster_module()
    bindir = module.find_bindir()
    if bindir is None:
        raise ClusterUnavailable("PostgreSQL is not installed (no initdb; Debian: apt-get install postgresql)")

    class BenchCluster(module.Cluster):  # type: ignore[name-defined,misc]
        def _run(self, *args: str) -> Any:
            if args[0] == "pg_ctl" and "start" in args and "-o" in args:
                more = (["fsync=on", "full_page_writes=on"] if fsync else []) + list(settings)
                at = args.index("-o") + 1
                args = (*args[:at], args[at] + "".join(f" -c {option}" for option in more), *args[at + 1:])
            return super()._run(*args)

    cluster = BenchCluster(bindir)
    try:
        cluster.start()
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            got = conn.execute("SHOW fsync").fetchone()[0]
        if got != ("on" if fsync else "off"):
            raise RuntimeError(f"the benchmark cluster runs with fsync={got}, not {'on' if fsync else 'off'}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass
class PgContext:
    """What a PostgreSQL scenario receives: the cluster, sizes, scratch space, the bench venv."""

    cluster: Any
    sizes: Sizes
    work: str
    bench_python: Optional[Path] = None
    baselines: set[str] = field(default_factory=set)
    log: Callable[[str], None] = lambda message: None
    _databases: set[str] = field(default_factory=set)

    def url(self, database: str) -> str:
        """A superuser URL of ``database`` in the cluster (trust authentication, 127.0.0.1)."""
        return str(self.cluster.url(database))

    def admin(self) -> Any:
        """A new autocommit superuser connection to the ``postgres`` database (close it)."""
        import psycopg

        return psycopg.connect(self.url("postgres"), autocommit=True)

    def create_database(self, name: str) -> str:
        """Create database ``name`` (once per group; a second call is an error) and return its URL."""
        if name in self._databases or not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r} is taken or not a plain identifier")
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._databases.add(name)
        return self.url(name)

    def counters(self, database: str, *, settle: float = 0.3) -> dict[str, float]:
        """Server-side counters: ``pg_stat_database`` of ``database`` and cluster-wide ``pg_stat_wal``.

        Backends report their counts when they go idle (at most once a second) and when they
        exit: call this after the measured connections are closed, and subtract two readings
        with :func:`counter_delta`. ``xact_commit`` counts every committed transaction, each
        autocommit statement included — the round trips that end in a commit.
        """
        time.sleep(settle)
        with self.admin() as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(f"SELECT {', '.join(COUNTERS)} FROM pg_stat_database WHERE datname = %s",
                               [database]).fetchone()
            wal = conn.execute(f"SELECT {', '.join(WAL_COUNTERS)} FROM pg_stat_wal").fetchone()
        return {**dict(zip(COUNTERS, map(float, row))), **dict(zip(WAL_COUNTERS, map(float, wal)))}

    def baseline_selected(self, name: str) -> bool:
        """Whether ``--baselines`` asked for baseline ``name``."""
        return name in self.baselines


def counter_delta(before: dict[str, float], after: dict[str, float], per: float) -> dict[str, float]:
    """``(after - before) / per`` for every counter (e.g. per step)."""
    return {key: (after[key] - before[key]) / per for key in after if key in before}


@dataclass
class PgScenario:
    """One registered scenario: ``run(ctx) -> dict`` and ``rows(section) -> list[Row]``."""

    run: Callable[[PgContext], dict[str, Any]]
    rows: Callable[[Any], list[Row]]
    about: str


# -- scenario: effect steps, ours vs DBOS on the same server ------------------------------------


def _api() -> types.SimpleNamespace:
    from abstractruntime.core.models import Effect, EffectType, StepPlan
    from abstractruntime.core.spec import WorkflowSpec

    return types.SimpleNamespace(StepPlan=StepPlan, Effect=Effect, EffectType=EffectType, WorkflowSpec=WorkflowSpec)


def _handlers() -> dict[Any, Any]:
    from abstractruntime.core.models import EffectType
    from abstractruntime.core.runtime import EffectOutcome

    return {EffectType.TOOL_CALLS: workloads.make_handler(EffectOutcome)}


FLOOR_LINE = '{"k":"' + "x" * 500 + '"}'


def commit_samples(ctx: PgContext, database: str, samples: int) -> list[float]:
    """``samples`` times of one autocommit INSERT of a ledger-sized row (one durable commit)."""
    import psycopg

    times = []
    with psycopg.connect(ctx.url(database), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, line text NOT NULL)")
        for _ in range(samples):
            t0 = harness.clock()
            conn.execute("INSERT INTO bench_floor (line) VALUES (%s)", [FLOOR_LINE])
            times.append(harness.clock() - t0)
        conn.execute("DROP TABLE bench_floor")
    return times


def commit_floor(ctx: PgContext, database: str) -> dict[str, Any]:
    """The yardstick: one autocommit INSERT of a ledger-sized row (one durable commit), median."""
    times = commit_samples(ctx, database, ctx.sizes.pg_commit_samples)
    return {"insert_commit_seconds": harness.median(times), "samples": len(times), "row_bytes": len(FLOOR_LINE)}


def _ours_round(ctx: PgContext, database: str, wf: Any, n: int) -> dict[str, Any]:
    """One round of ours: open the store, ``pg_reps`` runs of the effect workflow, close."""
    from abstractruntime.storage.store import open_store

    before = ctx.counters(database)
    store = open_store(ctx.url(database))
    samples = []
    try:
        rt = store.runtime(effect_handlers=_handlers())
        for _ in range(ctx.sizes.pg_reps):
            t0 = harness.clock()
            run_id = rt.start(workflow=wf)
            state = workloads.run_to_end(rt, wf, run_id)
            samples.append(harness.clock() - t0)
            assert state.output == {"done": True}, state.output
    finally:
        store.close()
    per_step = counter_delta(before, ctx.counters(database), n * len(samples))
    return {"samples": samples, "per_step": per_step}


def _dbos_round(ctx: PgContext, database: str, n: int) -> dict[str, Any]:
    """One round of DBOS in the bench venv: launch, ``pg_reps`` workflows, destroy."""
    assert ctx.bench_python is not None
    before = ctx.counters(database)
    spec = {"steps": n, "reps": ctx.sizes.pg_reps, "system_database_url": ctx.url(database)}
    doc = harness.run_json_script(ctx.bench_python, DBOS_SCRIPT, spec, cwd=ctx.work)
    if "effect_steps" in doc:
        doc["per_step"] = counter_delta(before, ctx.counters(database), n * len(doc["effect_steps"]["samples"]))
    return doc


def _summary(samples: list[float], n: int, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = harness.median(samples)
    keys = rounds[0]["per_step"].keys() if rounds and "per_step" in rounds[0] else []
    per_step = {k: harness.median([r["per_step"][k] for r in rounds]) for k in keys}
    return {"steps": n, "seconds": seconds, "steps_per_s": n / seconds, "step_seconds": seconds / n,
            "samples": samples, "per_step_server": per_step}


def effect_steps(ctx: PgContext) -> dict[str, Any]:
    """N effect steps (trivial tool_calls handler) on ``open_store(url)`` vs N ``@DBOS.step`` calls.

    Interleaved rounds (the yardstick's share of its samples, ours, then DBOS, ``pg_rounds``
    times; ``pg_reps`` workflows each) so a burst of disk noise hits all three; medians over all
    workflows and all the yardstick's samples. Each side has a database of its own in the same
    cluster; the server counters per step are medians over the rounds.
    """
    n = ctx.sizes.pg_effect_steps
    wf = workloads.effects(_api(), n)
    ours_db = "bench_ours_effects"
    ctx.create_database(ours_db)
    out: dict[str, Any] = {}
    floor_rounds: list[list[float]] = []
    floor_share = max(1, ctx.sizes.pg_commit_samples // ctx.sizes.pg_rounds)
    want_dbos = ctx.baseline_selected("dbos")
    dbos_db = "bench_dbos_effects"
    if want_dbos and ctx.bench_python is not None:
        ctx.create_database(dbos_db)
    ours_rounds, dbos_rounds = [], []
    dbos: dict[str, Any] = {}
    for round_no in range(ctx.sizes.pg_rounds):
        ctx.log(f"pg_effect_steps: round {round_no + 1}/{ctx.sizes.pg_rounds}, the yardstick, then ours")
        floor_rounds.append(commit_samples(ctx, ours_db, floor_share))
        ours_rounds.append(_ours_round(ctx, ours_db, wf, n))
        if not want_dbos:
            dbos = {"skipped": "not selected (--baselines)"}
        elif ctx.bench_python is None:
            from .runner import VENV_HINT

            dbos = {"skipped": f"no bench venv (create it: {VENV_HINT})"}
        elif "skipped" not in dbos and "error" not in dbos:
            ctx.log(f"pg_effect_steps: round {round_no + 1}/{ctx.sizes.pg_rounds}, DBOS")
            doc = _dbos_round(ctx, dbos_db, n)
            if "effect_steps" in doc:
                dbos_rounds.append(doc)
                dbos = {"package": doc.get("package", "dbos")}
            else:
                dbos = doc  # skipped or error: reported as is, not retried
    floor_times = [t for r in floor_rounds for t in r]
    out["floor"] = {"insert_commit_seconds": harness.median(floor_times), "samples": len(floor_times),
                    "row_bytes": len(FLOOR_LINE), "round_medians": [harness.median(r) for r in floor_rounds]}
    out["ours"] = {**_summary([s for r in ours_rounds for s in r["samples"]], n, ours_rounds),
                   "store": "open_store('postgresql://...') (PostgresStore), default durability",
                   # each round's step against the yardstick of the same round
                   "round_ratios": [harness.median(r["samples"]) / n / harness.median(f)
                                    for r, f in zip(ours_rounds, floor_rounds)]}
    if dbos_rounds:
        samples = [s for r in dbos_rounds for s in r["effect_steps"]["samples"]]
        dbos.update(_summary(samples, n, dbos_rounds))
        dbos["launch_seconds"] = harness.median([r["effect_steps"]["launch_seconds"] for r in dbos_rounds])
        dbos["durability"] = dbos_rounds[0]["effect_steps"]["durability"]
    out["dbos"] = dbos
    out["rounds"], out["reps_per_round"] = ctx.sizes.pg_rounds, ctx.sizes.pg_reps
    if _ok(dbos) and "steps_per_s" in dbos:
        out["ratio"] = out["ours"]["steps_per_s"] / dbos["steps_per_s"]
    return out


def effect_steps_rows(e: Any) -> list[Row]:
    """Rows of :func:`effect_steps`."""
    name = "effect steps (PostgreSQL)"
    if not _ok(e):
        return [Row(name, "effect workflow on PostgreSQL", _why(e))]
    ours, dbos, n = e["ours"], e["dbos"], e["ours"]["steps"]
    measure = f"{n} effect steps, fsync on"
    floor = e["floor"]["insert_commit_seconds"]
    spread = ours.get("round_ratios") or []
    each = f" (rounds {min(spread):.2f}–{max(spread):.2f}×)" if len(spread) > 1 else ""
    rows = [Row(name, f"{measure}: cost/step{each}", ms(ours["step_seconds"]), f"one INSERT commit {ms(floor)}",
                _ratio(ours["step_seconds"], floor), "≤ 2.5×", ours["step_seconds"] <= 2.5 * floor)]
    if _ok(dbos) and "steps_per_s" in dbos:
        ratio = ours["steps_per_s"] / dbos["steps_per_s"]
        rows.append(Row(name, measure, rate(ours["steps_per_s"], "steps/s"),
                        f"DBOS on PostgreSQL {rate(dbos['steps_per_s'], 'steps/s')}", ratio, "≥ 2×", ratio >= 2))
        for key, label in (("xact_commit", "server transactions per step"), ("wal_sync", "WAL fsyncs per step"),
                           ("wal_bytes", "WAL bytes per step")):
            mine, theirs = ours["per_step_server"].get(key), dbos.get("per_step_server", {}).get(key)
            if mine is not None and theirs is not None:
                fmt = "{:,.0f} B" if key == "wal_bytes" else "{:,.2f}"
                target = "≤ 2×" if key == "wal_bytes" else ""
                rows.append(Row(name, f"{n} effect steps: {label}", fmt.format(mine), f"DBOS {fmt.format(theirs)}",
                                _ratio(mine, theirs), target, mine <= 2 * theirs if target else None))
    else:
        rows.append(Row(name, measure, rate(ours["steps_per_s"], "steps/s"), f"DBOS on PostgreSQL: {_why(dbos)}",
                        None, "≥ 2×"))
    return rows


# -- the registry --------------------------------------------------------------------------------

# name → scenario, in run order; the worker-fleet scenarios are in benchmarks/pg_fleet.py.
PG_SCENARIOS: dict[str, PgScenario] = {
    "pg_effect_steps": PgScenario(effect_steps, effect_steps_rows,
                                  "N effect steps on open_store(postgresql://...) vs N @DBOS.step on the same server"),
    **{name: PgScenario(run, rows, about) for name, (run, rows, about) in FLEET_SCENARIOS.items()},
}


def server_info(ctx: PgContext) -> dict[str, Any]:
    """What the server runs with (version and the settings that decide commit cost)."""
    with ctx.admin() as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                    for name in ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method",
                                 "shared_buffers", "max_connections")}
    return {"version": version, "settings": settings, "data_directory": str(ctx.cluster.data)}


def run_group(sizes: Sizes, work: str, names: list[str], *, bench_python: Optional[Path],
              baselines: set[str], log: Callable[[str], None] = lambda m: None) -> tuple[dict[str, Any], bool]:
    """Start one cluster, run the scenarios ``names``, stop it; ``(section, failed)``.

    The section is ``{"skipped": why}`` when PostgreSQL or psycopg is missing, else
    ``{"server": ..., "scenarios": {name: result-or-{"error"|"skipped": ...}}}``.
    """
    try:
        log("starting a throwaway PostgreSQL cluster (fsync on)…")
        cluster = start_cluster(fsync=True)
    except ClusterUnavailable as exc:
        return {"skipped": str(exc)}, False
    failed = False
    section: dict[str, Any] = {"scenarios": {}}
    try:
        ctx = PgContext(cluster, sizes, work, bench_python=bench_python, baselines=baselines, log=log)
        section["server"] = server_info(ctx)
        for name, scenario in PG_SCENARIOS.items():
            if name not in names:
                section["scenarios"][name] = {"skipped": "not selected (--only)"}
                continue
            log(f"measuring {name}…")
            try:
                section["scenarios"][name] = scenario.run(ctx)
            except Exception as exc:  # one broken scenario must not hide the others
                failed = True
                section["scenarios"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                log(traceback.format_exc())
    finally:
        cluster.stop()
    return section, failed


def build_rows(section: Any) -> list[Row]:
    """The table rows of the ``postgres`` section of a results document (none when not run)."""
    if not isinstance(section, dict) or not section:
        return []
    if not _ok(section):
        if str(section.get("skipped", "")).startswith("not selected"):
            return []
        return [Row("PostgreSQL", "the PostgreSQL group", _why(section))]
    rows: list[Row] = []
    for name, scenario in PG_SCENARIOS.items():
        result = section["scenarios"].get(name)
        if isinstance(result, dict) and str(result.get("skipped", "")).startswith("not selected"):
            continue
        rows += scenario.rows(result)
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m benchmarks.postgres [options]``: the runner with only the PostgreSQL group."""
    from .runner import main as runner_main

    return runner_main(["--postgres", "--only", ",".join(PG_SCENARIOS), *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
