"""Where an effect step on PostgreSQL goes: ``python -m benchmarks.pg_profile [STEPS] [TICK]``.

Starts a throwaway cluster with ``fsync`` on (as :mod:`benchmarks.postgres` does), runs the
effect workflow of the ``pg_effect_steps`` scenario once to warm up and once measured
(``STEPS`` effect steps, ``TICK`` steps per ``tick``, 100 by default as there), and prints per
step:

- the statements the store sent (every ``execute``/``executemany`` of psycopg, by the first
  words of their SQL) and the round trips they cost (a statement, or a ``BEGIN``/``COMMIT``
  of an explicit transaction; a pipeline's sync counts once);
- the wall time of the step, split into the kernel's Python (outside the store's methods), the
  store's own Python (inside its methods, outside psycopg) and the time inside psycopg calls;
  and the CPU time of the process, split into the kernel's and the store's (psycopg and libpq
  included) — on a busy machine the CPU times move less than the wall times;
  that last part split again by the server's own counters: the time it spent executing (and
  planning) the statements (``pg_stat_statements``), the time its commits waited on the WAL's
  fsync (``pg_stat_wal.wal_sync_time``, with ``track_wal_io_timing``), and the rest (the network,
  libpq and psycopg's Python, parse/bind and the commit's other work); beside it, the round trip
  of an empty statement;
- the server's WAL by relation (``pg_waldump`` over the measured block): which table or index
  the bytes of a step go to, full-page images included;
- the yardstick of the group: one autocommit ``INSERT`` commit.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional

from . import workloads


@functools.lru_cache(maxsize=256)
def _label(sql: Any) -> str:
    """A statement's first words (schema names dropped), as the row label (cached: the time of
    a step inside the store must not be the profile's own)."""
    text = " ".join(str(getattr(sql, "as_string", lambda *_: sql)(None) if not isinstance(sql, str) else sql).split())
    text = re.sub(r'"?[a-z_0-9]+"?\.', "", text)
    return text[:70]


def _wrap(counts: dict[str, int], waits: list[float]) -> list[Callable[[], None]]:
    """Count and time psycopg's statements and transaction blocks (undone by the callables)."""
    import psycopg

    undo: list[Callable[[], None]] = []

    def wrap(owner: Any, name: str, label: Callable[..., str]) -> None:
        original = getattr(owner, name)

        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            counts[label(*args)] += 1
            start = time.perf_counter()
            try:
                result = original(self, *args, **kwargs)
            finally:
                waits[0] += time.perf_counter() - start
            return result

        setattr(owner, name, timed)
        undo.append(lambda: setattr(owner, name, original))

    wrap(psycopg.Cursor, "execute", lambda sql, *a, **k: _label(sql))
    wrap(psycopg.Cursor, "executemany", lambda sql, *a, **k: "executemany " + _label(sql))
    wrap(psycopg.Cursor, "fetchone", lambda *a, **k: "(fetch)")
    wrap(psycopg.Cursor, "fetchall", lambda *a, **k: "(fetch)")
    original_transaction = psycopg.Connection.transaction

    def transaction(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["BEGIN + COMMIT (explicit transaction)"] += 1
        return original_transaction(self, *args, **kwargs)

    psycopg.Connection.transaction = transaction  # type: ignore[method-assign]
    undo.append(lambda: setattr(psycopg.Connection, "transaction", original_transaction))
    return undo


def _time_store(seconds: list[float]) -> list[Callable[[], None]]:
    """Add the time spent inside the PostgreSQL stores' methods to ``seconds[0]`` and the CPU
    time of this process in them to ``seconds[1]`` (the outermost call only: a method calling
    another counts once); undone by the callables."""
    import inspect

    from abstractruntime.storage import postgres as package

    modules = [module for name, module in vars(package).items() if inspect.ismodule(module)]
    depth = [0]
    undo: list[Callable[[], None]] = []

    def timed(function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return function(*args, **kwargs)
            depth[0] += 1
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[0] += time.perf_counter() - start
                seconds[1] += time.process_time() - cpu
                depth[0] -= 1

        return call

    for module in modules:
        for owner in vars(module).values():
            if not inspect.isclass(owner) or owner.__module__ != module.__name__:
                continue
            for name, function in list(vars(owner).items()):
                if inspect.isfunction(function) and not inspect.isgeneratorfunction(function):
                    setattr(owner, name, timed(function))
                    undo.append(functools.partial(setattr, owner, name, function))
    return undo


def _server_counters(url: str) -> dict[str, float]:
    """Milliseconds the server spent executing and planning statements (``pg_stat_statements``,
    when loaded) and waiting on WAL writes and fsyncs (``pg_stat_wal``, with ``track_wal_io_timing``)."""
    import psycopg

    time.sleep(0.5)  # a closed session's counts are in once it has exited
    out: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        try:
            wal = conn.execute("SELECT wal_write_time, wal_sync_time FROM pg_stat_wal").fetchone() or ()
            out.update(zip(("wal_write_ms", "wal_sync_ms"), map(float, wal)))
        except psycopg.Error:
            pass  # before PostgreSQL 14: no pg_stat_wal
        try:
            row = conn.execute("SELECT coalesce(sum(total_exec_time), 0), coalesce(sum(total_plan_time), 0),"
                               " coalesce(sum(calls), 0) FROM pg_stat_statements"
                               " WHERE query NOT LIKE '%pg_stat%'").fetchone() or ()
            out.update(zip(("exec_ms", "plan_ms", "calls"), map(float, row)))
        except psycopg.Error:
            pass  # pg_stat_statements not loaded: no server-side statement time
    return out


def _empty_round_trip(url: str, samples: int = 200) -> float:
    """The median round trip of ``SELECT 1`` through psycopg (no table, no commit to wait on)."""
    import psycopg

    times = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(samples):
            start = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _wal_by_relation(cluster: Any, database: str, url: str, start: str, end: str) -> dict[str, float]:
    """WAL bytes of ``start``..``end`` by relation name (``pg_waldump``), the rest by resource manager."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        names = {str(node): f"{nspname}.{relname}" if nspname not in ("pg_catalog", "pg_toast") else relname
                 for node, nspname, relname in conn.execute(
                     "SELECT pg_relation_filenode(c.oid), n.nspname, c.relname FROM pg_class c"
                     " JOIN pg_namespace n ON n.oid = c.relnamespace"
                     " WHERE pg_relation_filenode(c.oid) IS NOT NULL").fetchall()}
        toast = {str(node): f"toast of {owner}" for node, owner in conn.execute(
            "SELECT pg_relation_filenode(c.reltoastrelid), c.relname FROM pg_class c WHERE c.reltoastrelid <> 0"
        ).fetchall()}
        names.update(toast)
    waldump = Path(cluster.bindir) / "pg_waldump"
    command = [str(waldump), "-p", str(Path(cluster.data) / "pg_wal"), "-s", start, "-e", end]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    sizes: dict[str, float] = defaultdict(float)
    pattern = re.compile(r"rmgr: (\w+)\s+len \(rec/tot\):\s+\d+/\s*(\d+),.*?desc: (\w+)(.*)")
    for line in done.stdout.splitlines():
        match = pattern.search(line)
        if not match:
            continue
        rmgr, total, kind, rest = match.group(1), int(match.group(2)), match.group(3), match.group(4)
        rel = re.search(r"rel \d+/\d+/(\d+)", rest)
        where = names.get(rel.group(1), f"relfilenode {rel.group(1)}") if rel else f"({rmgr} {kind})"
        if "FPW" in rest or "fpw" in rest:
            where += " (with full-page images)"
        sizes[where] += total
    return dict(sizes)


def _index_reads(url: str, *, settle: float = 0.5) -> dict[str, float]:
    """Index entries read so far, by index (``pg_stat_user_indexes``; a closed session's counts are
    in once it has exited, hence ``settle``)."""
    import psycopg

    time.sleep(settle)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return {str(name): float(read) for name, read in conn.execute(
            "SELECT indexrelname, idx_tup_read FROM pg_stat_user_indexes").fetchall()}


def measure(url: str, steps: int, tick: int) -> dict[str, Any]:
    """Per step on the database at ``url``: statements, round trips, wall time, time inside psycopg;
    ``wal_lsn``: the server's WAL positions around the measured run."""
    import psycopg

    from abstractruntime.core.models import EffectType
    from abstractruntime.core.runtime import EffectOutcome
    from abstractruntime.storage.store import open_store

    from .postgres import _api

    wf = workloads.effects(_api(), steps)
    handlers = {EffectType.TOOL_CALLS: workloads.make_handler(EffectOutcome)}
    warm = open_store(url)
    try:
        rt = warm.runtime(effect_handlers=handlers)
        workloads.run_to_end(rt, wf, rt.start(workflow=wf), max_steps=tick)  # warm-up
    finally:
        warm.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # every page's first change after it logs a full-page image
        start_lsn = str(conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])
    before = _index_reads(url)
    server_before = _server_counters(url)
    store = open_store(url)
    try:
        rt = store.runtime(effect_handlers=handlers)
        counts: dict[str, int] = defaultdict(int)
        waits = [0.0]
        in_store = [0.0, 0.0]
        undo = _wrap(counts, waits) + _time_store(in_store)
        try:
            t0, cpu0 = time.perf_counter(), time.process_time()
            state = workloads.run_to_end(rt, wf, rt.start(workflow=wf), max_steps=tick)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        finally:
            for step in undo:
                step()
        assert state.output == {"done": True}, state.output
    finally:
        store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        end_lsn = str(conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])
    after = _index_reads(url)
    server_after = _server_counters(url)
    server = {key: (server_after[key] - server_before[key]) / 1000.0 / steps for key in server_after
              if key in server_before and key != "calls"}
    index_reads = {name: (after[name] - before.get(name, 0)) / steps for name in after
                   if after[name] != before.get(name, 0)}
    statements = {k: v / steps for k, v in counts.items() if k != "(fetch)"}
    trips = sum(v for k, v in counts.items() if k != "(fetch)" and not k.startswith("BEGIN")) \
        + 2 * counts.get("BEGIN + COMMIT (explicit transaction)", 0)
    return {"steps": steps, "tick": tick, "step_seconds": wall / steps, "inside_psycopg_seconds": waits[0] / steps,
            "store_seconds": in_store[0] / steps, "server_seconds": server,
            "client_cpu_seconds": cpu / steps, "store_cpu_seconds": in_store[1] / steps,
            "round_trips": trips / steps, "statements": statements, "index_reads": index_reads,
            "wal_lsn": (start_lsn, end_lsn)}


def profile(steps: int, tick: int) -> dict[str, Any]:
    """:func:`measure` on a throwaway cluster with fsync on, the INSERT-commit yardstick, and the
    WAL of the measured run by relation."""
    import psycopg

    from .ours import Sizes
    from .postgres import PgContext, commit_floor, start_cluster

    cluster = start_cluster(fsync=True, settings=("shared_preload_libraries=pg_stat_statements",
                                                  "track_wal_io_timing=on"))
    try:
        ctx = PgContext(cluster, Sizes(pg_commit_samples=200), tempfile.mkdtemp())
        url = ctx.create_database("profile")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        floor = commit_floor(ctx, "profile")["insert_commit_seconds"]
        empty = _empty_round_trip(url)
        result = measure(url, steps, tick)
        wal = _wal_by_relation(cluster, "profile", url, *result["wal_lsn"])
    finally:
        cluster.stop()
    return {**result, "floor_seconds": floor, "empty_round_trip_seconds": empty, "wal_bytes": {k: v / steps for k, v in wal.items()}}


def render(result: dict[str, Any]) -> str:
    """The profile as plain text."""
    ms = 1000.0
    step, floor = result["step_seconds"], result["floor_seconds"]
    lines = [f"{result['steps']} effect steps, {result['tick']} per tick, fsync on",
             f"  step {step * ms:.3f} ms = {step / floor:.2f}x one INSERT commit ({floor * ms:.3f} ms)",
             f"  round trips per step {result['round_trips']:.2f}"]
    inside, store = result["inside_psycopg_seconds"], result.get("store_seconds")
    if store is None:
        lines.append(f"  inside psycopg calls {inside * ms:.3f} ms, Python {(step - inside) * ms:.3f} ms")
    else:
        server = result.get("server_seconds", {})
        if "client_cpu_seconds" in result:
            cpu, store_cpu = result["client_cpu_seconds"], result["store_cpu_seconds"]
            lines.append(f"  CPU time of this process {cpu * ms:.3f} ms: the kernel {(cpu - store_cpu) * ms:.3f} ms, "
                         f"the store with psycopg and libpq {store_cpu * ms:.3f} ms")
        lines += [f"  the kernel's Python (outside the store) {(step - store) * ms:.3f} ms",
                  f"  the store's Python (inside it, outside psycopg) {(store - inside) * ms:.3f} ms",
                  f"  inside psycopg calls {inside * ms:.3f} ms, of which:"]
        parts = [("the server executing statements", server.get("exec_ms")),
                 ("the server planning statements", server.get("plan_ms")),
                 ("WAL fsync (commit wait)", server.get("wal_sync_ms")),
                 ("WAL writes", server.get("wal_write_ms"))]
        known = 0.0
        for label, seconds in parts:
            if seconds is not None:
                known += seconds
                lines.append(f"    {seconds * ms:.3f} ms  {label}")
        lines.append(f"    {(inside - known) * ms:.3f} ms  the rest: network, libpq and psycopg, parse/bind, commit"
                     + (f" (an empty statement's round trip: {result['empty_round_trip_seconds'] * ms:.3f} ms)"
                        if "empty_round_trip_seconds" in result else ""))
    lines.append("statements per step:")
    for label, count in sorted(result["statements"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {count:7.3f}  {label}")
    lines.append("index entries read per step:")
    for label, count in sorted(result["index_reads"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {count:7.3f}  {label}")
    total = sum(result["wal_bytes"].values())
    lines.append(f"WAL bytes per step: {total:,.0f}")
    for label, size in sorted(result["wal_bytes"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {size:9,.0f}  {label}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m benchmarks.pg_profile [STEPS] [TICK]``."""
    args = sys.argv[1:] if argv is None else argv
    steps = int(args[0]) if args else 1000
    tick = int(args[1]) if len(args) > 1 else 100
    print(render(profile(steps, tick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
