"""Operational scenarios on this package: the ask_user round trip, verify, listing runs, start-up.

Like :mod:`benchmarks.ours`, each function returns a JSON-safe dict of measurements;
a part that cannot run here (no CLI installed) is reported as ``{"skipped": reason}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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


def ask_roundtrip(sizes: Sizes, work: str) -> dict[str, Any]:
    """start → wait → resume → complete: through the API (fsync) and through the CLI."""
    wf = workloads.ask(API)
    store = FileStore(tempfile.mkdtemp(dir=work))
    rt = store.runtime(effect_handlers=HANDLERS)
    times = []
    for _ in range(sizes.roundtrips):
        t0 = harness.clock()
        run_id = rt.start(workflow=wf)
        state = rt.tick(workflow=wf, run_id=run_id)
        assert state.status is RunStatus.WAITING and state.waiting is not None, state
        state = rt.resume(workflow=wf, run_id=run_id, wait_key=state.waiting.wait_key, payload={"answer": "yes"})
        times.append(harness.clock() - t0)
        assert state.output == {"answer": {"answer": "yes"}}, state.output
    store.close()
    out: dict[str, Any] = {"api": {"seconds": harness.median(times), "roundtrips": len(times)}}
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

        def check(rep: int) -> float:
            t0 = harness.clock()
            report = verify_run(store.root, run_id)
            elapsed = harness.clock() - t0
            assert report.ok and report.count == records, report.to_dict()
            return elapsed

        how = "abstractruntime.storage.verify.verify_run (chain + checkpoint)"
    except ImportError:
        from abstractruntime.storage.ledger_chain import verify_ledger_chain

        def check(rep: int) -> float:
            t0 = harness.clock()
            result = verify_ledger_chain(JsonlLedgerStore(store.root).list(run_id))
            elapsed = harness.clock() - t0
            assert result["ok"], result["errors"][:3]
            return elapsed

        how = "verify_ledger_chain over JsonlLedgerStore.list"

    def bare(rep: int) -> float:
        t0 = harness.clock()
        assert _bare_hash_loop(ledger_path.read_bytes()) == 0
        return harness.clock() - t0

    reps = max(sizes.reps, 3)
    verify_s, bare_s = harness.repeat(reps, check), harness.repeat(reps, bare)
    return {"records": records, "bytes": len(data), "function": how, "seconds": verify_s,
            "records_per_s": records / verify_s, "bare_seconds": bare_s, "bare_records_per_s": records / bare_s}


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


# What the kernel imports from the standard library and cannot load lazily (dataclasses brings
# inspect; the ledger needs hashlib and json; threads, locks and time stamps).
KERNEL_STDLIB = ("threading", "dataclasses", "datetime", "hashlib", "json", "typing", "contextvars", "fcntl")


def startup(sizes: Sizes, work: str) -> dict[str, Any]:
    """Wall time of fresh processes: bare interpreter, ``import abstractruntime``, ``--help``."""
    py = sys.executable
    commands = {
        "python_pass": [py, "-c", "pass"],
        "import_abstractruntime": [py, "-c", "import abstractruntime"],
        "import_runtime_and_store": [py, "-c", "from abstractruntime import Runtime, FileStore"],
        # The floor under the line above: the standard-library modules the kernel cannot do without.
        "import_kernel_stdlib": [py, "-c", "import " + ", ".join(KERNEL_STDLIB)],
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
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(sizes.startup_reps):
        for name, cmd in commands.items():
            samples[name].append(_run(cmd, expect=0, cwd=work, env=env)[0])
    for name, cmd in commands.items():
        out[name] = {"seconds": harness.median(samples[name]), "samples": samples[name],
                     "command": " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd))}
    if cli is None:
        out["cli_help"] = {"skipped": "the abstractruntime CLI is not installed"}
    return out
