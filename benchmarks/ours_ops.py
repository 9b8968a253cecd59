"""Operational scenarios on this package: the ask_user round trip, verify, listing runs, start-up.

Like :mod:`benchmarks.ours`, each function returns a JSON-safe dict of measurements;
a part that cannot run here (no CLI installed) is reported as ``{"skipped": reason}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from abstractruntime.core.models import RunStatus
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore
from abstractruntime.storage.store import FileStore

from . import harness, workloads
from .ours import API, HANDLERS, Sizes

ASK_WORKFLOW_FILE = '''\
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.spec import WorkflowSpec


def ask(run, ctx):
    effect = Effect(type=EffectType.ASK_USER, payload={"prompt": "Proceed?"}, result_key="answer")
    return StepPlan(node_id="ask", effect=effect, next_node="done")


def done(run, ctx):
    return StepPlan(node_id="done", complete_output={"answer": run.vars["answer"]})


workflow = WorkflowSpec(workflow_id="bench_ask", entry_node="ask", nodes={"ask": ask, "done": done})
'''


def cli_command() -> Optional[list[str]]:
    """How to run this package's CLI from the runner's interpreter (``None`` if it is missing)."""
    try:
        import abstractruntime.cli.main  # noqa: F401
    except ImportError:
        return None
    script = Path(sys.executable).parent / "abstractruntime"
    return [str(script)] if script.exists() else [sys.executable, "-m", "abstractruntime"]


def _run(cmd: list[str], *, expect: int, cwd: Optional[str] = None,
         env: Optional[dict[str, str]] = None) -> tuple[float, str]:
    t0 = harness.clock()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          timeout=300)
    elapsed = harness.clock() - t0
    if proc.returncode != expect:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}, expected {expect}: {proc.stderr.strip()[-400:]}")
    return elapsed, proc.stdout


def _ask_once(rt: Any, wf: Any) -> None:
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting is not None, state
    state = rt.resume(workflow=wf, run_id=run_id, wait_key=state.waiting.wait_key, payload={"answer": "yes"})
    assert state.output == {"answer": {"answer": "yes"}}, state.output


def _counted_fsyncs(rt: Any, wf: Any) -> dict[str, int]:
    """The fsyncs of one round trip, by what they make durable: ``directory`` (a new entry in it)
    or the name of the file (``ledger.jsonl``, ...)."""
    counts: dict[str, int] = {}
    real = os.fsync

    def counting(fd: int) -> None:
        what = "directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        counts[what] = counts.get(what, 0) + 1
        real(fd)

    os.fsync = counting  # type: ignore[assignment]
    try:
        _ask_once(rt, wf)
    finally:
        os.fsync = real
    return counts


def ask_roundtrip(sizes: Sizes, work: str) -> dict[str, Any]:
    """start → wait → resume → complete: through the API (fsync, and fsync off), its fsyncs
    counted, and through the CLI."""
    wf = workloads.ask(API)
    stores = {d: FileStore(tempfile.mkdtemp(dir=work), durability=d) for d in ("fsync", "none")}
    rts = {d: s.runtime(effect_handlers=HANDLERS) for d, s in stores.items()}
    times: dict[str, list[float]] = {"fsync": [], "none": []}
    for _ in range(sizes.roundtrips):
        for durability, rt in rts.items():  # interleaved: both sides see the same moments of the disk
            t0 = harness.clock()
            _ask_once(rt, wf)
            times[durability].append(harness.clock() - t0)
    fsyncs = _counted_fsyncs(rts["fsync"], wf) if os.path.isdir("/proc/self/fd") else {}
    for store in stores.values():
        store.close()
    out: dict[str, Any] = {"api": {"seconds": harness.median(times["fsync"]), "roundtrips": len(times["fsync"]),
                                   "fsyncs": fsyncs},
                           "api_no_fsync": {"seconds": harness.median(times["none"])}}
    cli = cli_command()
    if cli is None:
        out["cli"] = {"skipped": "the abstractruntime CLI is not installed"}
        return out
    folder = Path(tempfile.mkdtemp(dir=work))
    (folder / "ask.py").write_text(ASK_WORKFLOW_FILE)
    # `--workflows`: the operator registers the folder, so `resume` finds ask.py by its id.
    base = cli + ["--store", str(folder / "store"), "--workflows", str(folder), "--no-input"]
    totals, runs, resumes = [], [], []
    for _ in range(sizes.cli_roundtrips):
        t_run, stdout = _run(base + ["run", "ask.py", "--json"], expect=5, cwd=str(folder))
        doc = json.loads(stdout)
        handle = doc.get("wait_handle") or doc["run_id"]  # the wait handle names the wait being answered
        t_resume, stdout = _run(base + ["resume", handle, "--answer", "yes", "--json"], expect=0, cwd=str(folder))
        assert json.loads(stdout)["status"] == "completed", stdout
        runs.append(t_run)
        resumes.append(t_resume)
        totals.append(t_run + t_resume)
    out["cli"] = {"seconds": harness.median(totals), "run_seconds": harness.median(runs),
                  "resume_seconds": harness.median(resumes), "roundtrips": len(totals)}
    return out


def _bare_hash_loop(data: bytes) -> int:
    """The yardstick: parse each line, drop the hash fields, canonical-dump, sha256, compare."""
    bad = 0
    for line in data.splitlines():
        doc = json.loads(line)
        stored = doc.pop("record_hash")
        doc.pop("signature", None)
        body = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        bad += hashlib.sha256(body).hexdigest() != stored
    return bad


def verify_throughput(sizes: Sizes, work: str) -> dict[str, Any]:
    """Records/s of verify_run over one long ledger, against a bare sha256 + json loop."""
    wf = workloads.flat(API, spin=sizes.verify_records, measured=0, stamps=[])
    store = FileStore(tempfile.mkdtemp(dir=work), durability="none")
    rt = store.runtime()
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id, max_steps=sizes.verify_records + 10)
    store.close()
    ledger_path = store.root / "runs" / run_id / "ledger.jsonl"
    data = ledger_path.read_bytes()
    records = data.count(b"\n")
    try:
        from abstractruntime.storage.verify import verify_run

        def check(jobs: Optional[int]) -> tuple[float, float]:
            cpu0 = _cpu_seconds()
            t0 = harness.clock()
            report = verify_run(store.root, run_id, jobs=jobs)
            elapsed = harness.clock() - t0
            assert report.ok and report.count == records, report.to_dict()
            return elapsed, _cpu_seconds() - cpu0

        how = "abstractruntime.storage.verify.verify_run (chain, canonical form, state replay, checkpoint)"
    except ImportError:
        from abstractruntime.storage.ledger_chain import verify_ledger_chain

        def check(jobs: Optional[int]) -> tuple[float, float]:
            cpu0 = _cpu_seconds()
            t0 = harness.clock()
            result = verify_ledger_chain(JsonlLedgerStore(store.root).list(run_id))
            elapsed = harness.clock() - t0
            assert result["ok"], result["errors"][:3]
            return elapsed, _cpu_seconds() - cpu0

        how = "verify_ledger_chain over JsonlLedgerStore.list"

    def bare() -> float:
        t0 = harness.clock()
        assert _bare_hash_loop(ledger_path.read_bytes()) == 0
        return harness.clock() - t0

    # Interleaved rounds (every core, one process, the bare loop), so a noisy neighbour hits all three.
    runs: dict[str, list[float]] = {"seconds": [], "cpu": [], "one": [], "bare": []}
    for _ in range(max(sizes.reps, 5)):
        wall, cpu = check(None)
        runs["seconds"].append(wall)
        runs["cpu"].append(cpu)
        runs["one"].append(check(1)[0])
        runs["bare"].append(bare())
    verify_s, one_s, bare_s = (harness.median(runs[k]) for k in ("seconds", "one", "bare"))
    many = _verify_many(sizes, work)
    return {"store": many, "records": records, "bytes": len(data), "function": how, "jobs": default_jobs(), "seconds": verify_s,
            "seconds_min": min(runs["seconds"]), "seconds_max": max(runs["seconds"]),
            "cpu_seconds": harness.median(runs["cpu"]), "records_per_s": records / verify_s,
            "one_process_seconds": one_s, "one_process_records_per_s": records / one_s,
            "bare_seconds": bare_s, "bare_seconds_min": min(runs["bare"]), "bare_seconds_max": max(runs["bare"]),
            "bare_records_per_s": records / bare_s}


def _verify_many(sizes: Sizes, work: str) -> dict[str, Any]:
    """``verify --all``'s library call over a store of 100 runs holding as many records as the long
    ledger above, on every core and in one process, in interleaved rounds."""
    try:
        from abstractruntime.storage.verify import verify_store
    except ImportError:
        return {"skipped": "no verify_store"}
    runs = 100
    per_run = max(sizes.verify_records // runs, 2)
    wf = workloads.flat(API, spin=per_run, measured=0, stamps=[])
    store = FileStore(tempfile.mkdtemp(dir=work), durability="none")
    rt = store.runtime()
    for n in range(runs):
        run_id = rt.start(workflow=wf, run_id=f"r{n:03d}")
        rt.tick(workflow=wf, run_id=run_id, max_steps=per_run + 10)
    store.close()
    records = sum((store.root / "runs" / f"r{n:03d}" / "ledger.jsonl").read_bytes().count(b"\n") for n in range(runs))
    times: dict[str, list[float]] = {"every": [], "one": []}
    for _ in range(max(sizes.reps, 5)):
        for key, jobs in (("every", None), ("one", 1)):
            t0 = harness.clock()
            reports = verify_store(store.root, jobs=jobs)
            times[key].append(harness.clock() - t0)
            assert len(reports) == runs and all(r.ok for r in reports)
    every, one = harness.median(times["every"]), harness.median(times["one"])
    return {"runs": runs, "records": records, "seconds": every, "seconds_min": min(times["every"]),
            "seconds_max": max(times["every"]), "records_per_s": records / every, "one_process_seconds": one,
            "one_process_records_per_s": records / one}


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the verify workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def default_jobs() -> int:
    """The CPUs verify uses by default."""
    try:
        from abstractruntime.storage.verify_pool import default_jobs as jobs

        return jobs()
    except ImportError:
        return 1


def _populate(root: Path, count: int) -> float:
    """``count`` runs (1 in 10 waiting on a user), written as run.json files; returns seconds."""
    seed_store = FileStore(root, durability="none")
    rt = seed_store.runtime()
    wf = workloads.ask(API)
    waiting_id = rt.start(workflow=wf, run_id="seed-waiting")
    rt.tick(workflow=wf, run_id=waiting_id)
    done_id = rt.start(workflow=wf, run_id="seed-done")
    rt.tick(workflow=wf, run_id=done_id)
    rt.resume(workflow=wf, run_id=done_id, wait_key=None, payload={"answer": "no"})
    seed_store.close()
    runs = root / "runs"
    templates = {}
    for seed in (waiting_id, done_id):
        templates[seed] = (runs / seed / "run.json").read_bytes()
        shutil.rmtree(runs / seed)
    (root / "index.sqlite3").unlink()  # let the first query rebuild it in bulk
    for extra in ("index.sqlite3-wal", "index.sqlite3-shm"):
        (root / extra).unlink(missing_ok=True)
    t0 = harness.clock()
    for i in range(count):
        seed = waiting_id if i % 10 == 0 else done_id
        run_id = f"run-{i:07d}"
        folder = runs / run_id
        os.mkdir(folder, 0o700)
        fd = os.open(folder / "run.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, templates[seed].replace(seed.encode(), run_id.encode()))
        finally:
            os.close(fd)
    return harness.clock() - t0


def runs_list(sizes: Sizes, work: str) -> dict[str, Any]:
    """``list_runs(status=WAITING)`` (and ``runs list --status waiting``) over many runs."""
    cli = cli_command()
    points = []
    for count in sizes.list_counts:
        root = Path(tempfile.mkdtemp(dir=work))
        write_s = _populate(root, count)
        store = JsonFileRunStore(root, durability="none")
        t0 = harness.clock()
        first = store.list_runs(status=RunStatus.WAITING)
        rebuild_s = harness.clock() - t0
        assert len(first) == min(100, (count + 9) // 10), len(first)

        def warm(rep: int) -> float:
            t = harness.clock()
            assert len(store.list_runs(status=RunStatus.WAITING)) == len(first)
            return harness.clock() - t

        point: dict[str, Any] = {"runs": count, "write_files_seconds": write_s,
                                 "first_query_with_index_build_seconds": rebuild_s,
                                 "query_seconds": harness.repeat(5, warm)}
        store.close()
        if cli is not None:
            cmd = cli + ["--store", str(root), "runs", "list", "--status", "waiting", "--json"]
            point["cli_seconds"] = harness.repeat(3, lambda rep: _run(cmd, expect=0)[0])
        points.append(point)
        shutil.rmtree(root)
    out: dict[str, Any] = {"points": points}
    if cli is None:
        out["cli"] = {"skipped": "the abstractruntime CLI is not installed"}
    return out


# What the kernel's first use imports from the standard library (dataclasses brings inspect; the
# ledger needs hashlib and json; threads, locks and time stamps): the first Runtime() or FileStore()
# loads it, the import of the two names does not.
KERNEL_STDLIB = ("threading", "dataclasses", "datetime", "hashlib", "json", "typing", "contextvars", "fcntl")


def startup(sizes: Sizes, work: str) -> dict[str, Any]:
    """Wall time of fresh processes: bare interpreter, ``import abstractruntime``, ``--help``."""
    py = sys.executable
    commands = {
        "python_pass": [py, "-c", "pass"],
        "import_abstractruntime": [py, "-c", "import abstractruntime"],
        "import_runtime_and_store": [py, "-c", "from abstractruntime import Runtime, FileStore"],
        # What the first use of the two names adds: the standard-library modules the kernel's code
        # needs, and a store and its runtime made (which import the kernel's modules).
        "import_kernel_stdlib": [py, "-c", "import " + ", ".join(KERNEL_STDLIB)],
        "first_use": [py, "-c", "import tempfile\nfrom abstractruntime import FileStore\n"
                                "FileStore(tempfile.mkdtemp(dir='.'), durability='none').runtime()"],
    }
    cli = cli_command()
    if cli is not None:
        commands["cli_help"] = cli + ["--help"]
    # An installed package has its bytecode compiled; PYTHONDONTWRITEBYTECODE in the runner's
    # environment would make every process compile each module it imports.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out: dict[str, Any] = {}
    for cmd in commands.values():
        _run(cmd, expect=0, cwd=work, env=env)  # warm the page cache, write the .pyc files
    # Interleaved rounds (every command once per round): a neighbour's burst of load then hits
    # the yardstick and the measured commands alike, and the ratios stay comparable.
    # Each round starts at the next command: the one that runs first, right after the heaviest
    # of the previous round, is not always the yardstick.
    samples: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for rep in range(sizes.startup_reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            samples[name].append(_run(commands[name], expect=0, cwd=work, env=env)[0])
    for name, cmd in commands.items():
        out[name] = {"seconds": harness.median(samples[name]), "samples": samples[name],
                     "command": " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd))}
    if cli is None:
        out["cli_help"] = {"skipped": "the abstractruntime CLI is not installed"}
    return out
