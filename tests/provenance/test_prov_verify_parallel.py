"""Verifying a long ledger on several cores finds what one process finds, and says so the same way.

A real run grows a ledger with stored values, list extensions, effects, floats and (in one
variant) sealed segments, with an anchor every few records so that even a small ledger is cut
into ranges; the size threshold is lowered so the parallel pass is taken. Every tamper of the
matrix — an edited, re-hashed, removed, reordered, duplicated, torn, garbage or non-canonical
line, a forged state digest, edits inside a sealed segment, a segment removed — must keep the
parallel pass from concluding "clean", and ``verify_run`` must return exactly the report of one
process. Tampered anchors (a cache) must change nothing. Hypothesis checks the same agreement for
random single-byte edits and random ledgers, and that the one-parse line check never accepts a
line the careful check refuses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime import Effect, EffectOutcome, EffectType, RunState, StepPlan, WorkflowSpec
from abstractruntime.core import session
from abstractruntime.core.canonical import record_hash
from abstractruntime.core.errors import StorageError
from abstractruntime.core.jcs import is_jcs_line, jcs
from abstractruntime.core.json_codec import loads_strict
from abstractruntime.storage import verify_parallel, verify_pool
from abstractruntime.storage.ledger_scan import LedgerScan
from abstractruntime.storage.segments import list_parts
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run, verify_store
from abstractruntime.storage.verify_lines import canonical_record
from abstractruntime.storage.verify_report import VerifyReport

from prov_helpers import documented_hash, line_of


def _talk(run: RunState, ctx: Any) -> StepPlan:
    i = run.vars.get("i", 0) + 1
    run.vars["i"] = i
    run.vars["log"] = list(run.vars.get("log", [])) + [f"message {i} " + "x" * 300]  # stored, then extended
    run.vars["ratio"] = i / 7
    if i >= run.vars["steps"]:
        return StepPlan("talk", complete_output={"i": i})
    if i % 4 == 0:
        return StepPlan("talk", next_node="talk", effect=Effect(
            EffectType.TOOL_CALLS, {"log": run.vars["log"], "i": i}, result_key="tool"))
    return StepPlan("talk", next_node="talk")


TALK = WorkflowSpec("talk", "talk", {"talk": _talk})


def _tool(run: RunState, effect: Effect) -> EffectOutcome:
    return EffectOutcome.completed({"seen": effect.payload["i"], "score": 0.25})


def grow(root: Path, run_id: str, *, steps: int, segment_records: Optional[int] = None,
         workflow: WorkflowSpec = TALK, vars: Optional[dict[str, Any]] = None, signer: Any = None) -> Path:
    """A completed run of ``steps`` steps, ticked 3 steps at a time; returns its directory."""
    kwargs: dict[str, Any] = {} if segment_records is None else {"segment_records": segment_records}
    store = FileStore(root, durability="none", **kwargs)
    runtime = store.runtime(effect_handlers={EffectType.TOOL_CALLS: _tool},
                            **({"signer": signer} if signer is not None else {}))
    runtime.start(workflow=workflow, run_id=run_id, vars={"steps": steps, **(vars or {})})
    while runtime.tick(workflow=workflow, run_id=run_id, max_steps=3).status.value == "running":
        pass
    store.close()
    return root / "runs" / run_id


@pytest.fixture(autouse=True)
def _small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints every 5 records, anchors every 8 and no size threshold: small ledgers take the
    parallel pass."""
    monkeypatch.setattr(session, "CHECKPOINT_EVERY", 5)
    monkeypatch.setattr(session, "ANCHOR_EVERY", 8)
    monkeypatch.setattr(verify_parallel, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(verify_pool, "PARALLEL_STORE_MIN_BYTES", 1)


def parallel_clean(root: Path, run_id: str, jobs: int = 2) -> bool:
    """Whether the parallel pass alone concludes that the ledger is clean."""
    run_dir = root / "runs" / run_id
    scan = LedgerScan(VerifyReport(run_id=run_id, path=str(run_dir)), want_seqs=set(), want_hashes=set(),
                      committed_seq=None)
    return verify_parallel.scan_parallel(scan, list_parts(run_dir), run_dir, jobs=jobs)


def assert_same(root: Path, run_id: str, jobs: int = 2) -> dict[str, Any]:
    one = verify_run(root, run_id, jobs=1).to_dict()
    assert verify_run(root, run_id, jobs=jobs).to_dict() == one
    return one


# -- the ledger as lines, across its files --------------------------------------------------------

class Lines:
    """Every line of a run's ledger with the file it is in, to tamper with and write back."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.files = [p.path for p in list_parts(run_dir).all]
        self.lines: list[tuple[Path, bytes]] = [(path, raw) for path in self.files
                                                for raw in path.read_bytes().split(b"\n")[:-1]]

    def record(self, index: int) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.lines[index][1])
        return doc

    def index_of_seq(self, seq: int) -> int:
        return next(i for i, (_, raw) in enumerate(self.lines) if json.loads(raw)["seq"] == seq)

    def save(self) -> None:
        for path in self.files:
            path.write_bytes(b"".join(raw + b"\n" for p, raw in self.lines if p == path))


def _edit(lines: Lines, i: int) -> None:
    doc = lines.record(i)
    doc["at"] = "2000-01-01T00:00:00+00:00"
    lines.lines[i] = (lines.lines[i][0], line_of(doc))


def _edit_rehash(lines: Lines, i: int) -> None:
    doc = lines.record(i)
    doc["at"] = "2000-01-01T00:00:00+00:00"
    doc["record_hash"] = documented_hash(doc)
    lines.lines[i] = (lines.lines[i][0], line_of(doc))


def _remove(lines: Lines, i: int) -> None:
    del lines.lines[i]


def _swap(lines: Lines, i: int) -> None:
    j = i + 1 if i + 1 < len(lines.lines) else i - 1
    (pi, ri), (pj, rj) = lines.lines[i], lines.lines[j]
    lines.lines[i], lines.lines[j] = (pi, rj), (pj, ri)


def _duplicate(lines: Lines, i: int) -> None:
    lines.lines.insert(i + 1, lines.lines[i])


def _torn(lines: Lines, i: int) -> None:
    path, raw = lines.lines[i]
    lines.lines[i] = (path, raw[: len(raw) // 2])


def _garbage(lines: Lines, i: int) -> None:
    lines.lines.insert(i, (lines.lines[i][0], b'{"not": "a record"'))


def _not_canonical(lines: Lines, i: int) -> None:
    path, raw = lines.lines[i]
    lines.lines[i] = (path, json.dumps(json.loads(raw), sort_keys=True).encode())  # spaces: same content, same hash


def _forged_state(lines: Lines, i: int) -> None:
    """A state digest changed by someone who then re-hashes the rest of the chain."""
    k = next((j for j in range(i, len(lines.lines)) if "state" in lines.record(j)), None)
    assert k is not None
    prev = lines.record(k - 1)["record_hash"] if k else None
    for j in range(k, len(lines.lines)):
        doc = lines.record(j)
        if j == k:
            doc["state"] = "0" * 64
        doc["prev_hash"] = prev
        doc["record_hash"] = prev = documented_hash(doc)
        lines.lines[j] = (lines.lines[j][0], line_of(doc))


ATTACKS: dict[str, Callable[[Lines, int], None]] = {
    "edited": _edit, "edited and re-hashed": _edit_rehash, "removed": _remove, "reordered": _swap,
    "duplicated": _duplicate, "torn in the middle": _torn, "garbage line": _garbage,
    "not canonical": _not_canonical, "forged state digest": _forged_state,
}


def _positions(run_dir: Path, jobs: int) -> dict[str, int]:
    """Line indexes worth attacking: early, around each cut the parallel pass makes, and late."""
    parts = list_parts(run_dir)
    cuts = verify_parallel._cuts(verify_parallel._anchors(run_dir, parts.size), parts.size, jobs)
    assert cuts, "the fixture must give the parallel pass an anchor to cut at"
    lines = Lines(run_dir)
    found = {"early": 2, "late": len(lines.lines) - 3}
    for n, cut in enumerate(cuts):
        at = lines.index_of_seq(cut.seq)
        found.update({f"before cut {n}": at - 1, f"cut {n}": at, f"after cut {n}": at + 1})
    return found


@pytest.fixture
def long_run(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "store"
    grow(root, "long", steps=60)
    return root, "long"


@pytest.fixture
def segmented_run(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "store"
    run_dir = grow(root, "seg", steps=60, segment_records=25)
    assert len(list_parts(run_dir).sealed) >= 2
    return root, "seg"


# -- clean ledgers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("jobs", [2, 3, 5])
def test_a_clean_ledger_is_cleared_in_parallel_with_the_same_report(long_run: tuple[Path, str], jobs: int) -> None:
    root, run_id = long_run
    assert parallel_clean(root, run_id, jobs)
    report = assert_same(root, run_id, jobs)
    assert report["ok"] and report["count"] > 70 and report["checkpoint_head"] is not None


def test_a_clean_segmented_ledger_is_cleared_in_parallel(segmented_run: tuple[Path, str]) -> None:
    root, run_id = segmented_run
    assert parallel_clean(root, run_id, 3)
    assert assert_same(root, run_id, 3)["ok"]


def test_lookups_made_across_ranges_match(long_run: tuple[Path, str]) -> None:
    """Bookmarks, an expected head and the checkpoint are looked up in whichever range holds them."""
    root, run_id = long_run
    lines = Lines(root / "runs" / run_id)
    early, late = lines.record(5), lines.record(len(lines.lines) - 4)
    for head in (early["record_hash"], late["record_hash"]):
        one = verify_run(root, run_id, expect_head=head, jobs=1).to_dict()
        assert verify_run(root, run_id, expect_head=head, jobs=3).to_dict() == one
        assert one["ok"]
    store = FileStore(root, durability="none")
    store.bookmarks.add(run_id, "early", seq=early["seq"])
    store.close()
    assert assert_same(root, run_id, 3)["bookmarks_checked"] == 1


def test_small_ledgers_stay_in_one_process(long_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    root, run_id = long_run
    monkeypatch.setattr(verify_parallel, "PARALLEL_MIN_BYTES", 1 << 30)
    assert not parallel_clean(root, run_id)
    assert verify_run(root, run_id).ok


def test_without_anchors_the_ledger_is_verified_in_one_process(long_run: tuple[Path, str]) -> None:
    root, run_id = long_run
    (root / "runs" / run_id / "anchors.jsonl").unlink()
    assert not parallel_clean(root, run_id)
    assert assert_same(root, run_id)["ok"]


def test_a_signed_run_is_cleared_in_parallel_and_its_trail_joined(tmp_path: Path) -> None:
    """Every batch ends with a signed record: the trail crosses the ranges, and is judged whole."""
    pytest.importorskip("cryptography")
    from abstractruntime.storage.signing import Ed25519Signer

    signer = Ed25519Signer.generate()
    root = tmp_path / "store"
    run_dir = grow(root, "signed", steps=40, signer=signer)
    assert parallel_clean(root, "signed", 3)
    for key in (None, signer.public_key):
        one = verify_run(root, "signed", public_key=key, jobs=1).to_dict()
        assert verify_run(root, "signed", public_key=key, jobs=3).to_dict() == one
        assert one["ok"] and one["signature"] == ("valid" if key is not None else "unchecked")
    lines = Lines(run_dir)  # the last signature stripped: the tail after the one before it is unsigned
    index = max(i for i in range(len(lines.lines)) if "signature" in lines.record(i))
    doc = lines.record(index)
    del doc["signature"]
    lines.lines[index] = (lines.lines[index][0], line_of(doc))
    lines.save()
    report = assert_same(root, "signed", 3)
    assert "unsigned_tail" in {p["type"] for p in report["problems"]}


# -- the tamper matrix, on the parallel pass -------------------------------------------------------

@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_every_tamper_is_caught_by_the_parallel_pass(long_run: tuple[Path, str], attack: str) -> None:
    root, run_id = long_run
    run_dir = root / "runs" / run_id
    pristine = run_dir.with_name("pristine")
    shutil.copytree(run_dir, pristine)
    for where, index in _positions(run_dir, 3).items():
        shutil.rmtree(run_dir)
        shutil.copytree(pristine, run_dir)
        lines = Lines(run_dir)
        ATTACKS[attack](lines, index)
        lines.save()
        assert not parallel_clean(root, run_id, 3), f"{attack} at {where} passed the parallel pass"
        report = assert_same(root, run_id, 3)
        assert not report["ok"], f"{attack} at {where} was not caught"


@pytest.mark.parametrize("attack", ["edited", "edited and re-hashed", "removed", "reordered", "not canonical"])
def test_edits_inside_a_sealed_segment_are_caught(segmented_run: tuple[Path, str], attack: str) -> None:
    root, run_id = segmented_run
    run_dir = root / "runs" / run_id
    lines = Lines(run_dir)
    first_segment = lines.files[0]
    index = sum(1 for path, _ in lines.lines if path == first_segment) // 2
    ATTACKS[attack](lines, index)
    lines.save()
    assert not parallel_clean(root, run_id, 3)
    assert not assert_same(root, run_id, 3)["ok"]


@pytest.mark.parametrize("damage", ["segment removed", "segments swapped", "segment cut", "newline cut"])
def test_segment_damage_is_caught(segmented_run: tuple[Path, str], damage: str) -> None:
    root, run_id = segmented_run
    run_dir = root / "runs" / run_id
    sealed = [p.path for p in list_parts(run_dir).sealed]
    if damage == "segment removed":
        sealed[0].unlink()
    elif damage == "segments swapped":
        first, second = sealed[0].read_bytes(), sealed[1].read_bytes()
        sealed[0].write_bytes(second)
        sealed[1].write_bytes(first)
    elif damage == "segment cut":
        data = sealed[0].read_bytes()
        sealed[0].write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1])  # its closing record gone
    else:
        sealed[1].write_bytes(sealed[1].read_bytes()[:-1])
    assert not parallel_clean(root, run_id, 3)
    assert not assert_same(root, run_id, 3)["ok"]


@pytest.mark.parametrize("change", ["state", "offset", "seq", "head_hash", "garbage", "unhashable state",
                                    "not a state"])
def test_tampered_anchors_change_nothing(long_run: tuple[Path, str], change: str) -> None:
    """Anchors are a cache: one that does not fit the ledger is not believed, and the run is clean."""
    root, run_id = long_run
    path = root / "runs" / run_id / "anchors.jsonl"
    docs = [json.loads(line) for line in path.read_bytes().splitlines()]
    for doc in docs:
        if change == "state":
            doc["checkpoint"]["state"]["run"]["vars"]["i"] = -1
        elif change == "offset":
            doc["offset"] += 7
        elif change == "seq":
            doc["seq"] += 1
        elif change == "head_hash":
            doc["head_hash"] = "0" * 64
        elif change == "not a state":
            doc["checkpoint"]["state"]["kernel"]["effects"] = {"not": "a count"}
            doc["checkpoint"]["state"]["run"]["vars"] = [1, 2]
    data = b"".join(json.dumps(d).encode() + b"\n" for d in docs)
    if change == "unhashable state":  # 1e400 reads as an infinite float, which no canonical form has
        data = data.replace(b'"vars": {', b'"vars": {"huge": 1e400, ')
    path.write_bytes(b"{garbage\n" * len(docs) if change == "garbage" else data)
    assert not parallel_clean(root, run_id, 3)
    assert assert_same(root, run_id, 3)["ok"]


def test_anchors_larger_than_the_ledger_and_64_mib_are_not_read(long_run: tuple[Path, str]) -> None:
    root, run_id = long_run
    path = root / "runs" / run_id / "anchors.jsonl"
    with open(path, "ab") as handle:
        handle.truncate(path.stat().st_size + (65 << 20))  # sparse: the size counts, not the disk
    assert verify_parallel._anchors(path.parent, 10) == []
    assert assert_same(root, run_id, 3)["ok"]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_anchors_that_are_no_file_are_not_read(long_run: tuple[Path, str], kind: str) -> None:
    """A symlink is not followed (to /dev/zero it would never end), a FIFO not waited on."""
    root, run_id = long_run
    path = root / "runs" / run_id / "anchors.jsonl"
    real = path.with_name("real-anchors")
    path.rename(real)
    if kind == "symlink":
        path.symlink_to(real)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    assert not parallel_clean(root, run_id, 3)
    assert assert_same(root, run_id, 3)["ok"]


def test_an_anchor_with_another_true_state_is_not_believed(long_run: tuple[Path, str]) -> None:
    """An anchor moved to another record's position, with its own state: the digests do not join."""
    root, run_id = long_run
    path = root / "runs" / run_id / "anchors.jsonl"
    docs = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert len(docs) >= 2
    for doc, other in zip(docs, docs[1:] + docs[:1]):
        doc["checkpoint"] = other["checkpoint"]
    path.write_bytes(b"".join(json.dumps(d).encode() + b"\n" for d in docs))
    assert not parallel_clean(root, run_id, 3)
    assert assert_same(root, run_id, 3)["ok"]


# -- workers that die --------------------------------------------------------------------------------

_PARENT = os.getpid()


def _dying_range(task: Any) -> Any:
    """A worker killed with SIGKILL while it scans (the parent keeps going)."""
    if os.getpid() != _PARENT:
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_scan_range(task)


_real_scan_range = verify_parallel.scan_range


def _forked_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers forked whatever threads earlier tests left idle in this process, so that they run
    the function patched here (a fresh interpreter would import the real one)."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    monkeypatch.setattr(verify_parallel, "context", lambda: multiprocessing.get_context("fork"))
    monkeypatch.setattr(verify_pool, "can_fork", lambda: True)


def test_a_killed_worker_is_a_clear_error_not_a_hang(long_run: tuple[Path, str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root, run_id = long_run
    _forked_workers(monkeypatch)
    monkeypatch.setattr(verify_parallel, "scan_range", _dying_range)
    with pytest.raises(StorageError, match="worker process died"):
        verify_run(root, run_id, jobs=2)


def test_with_other_threads_running_workers_are_fresh_interpreters(long_run: tuple[Path, str]) -> None:
    """Forking while another thread may hold a lock could leave a child waiting forever: a process
    with threads starts its workers as new interpreters instead, and gets the same report."""
    import threading

    root, run_id = long_run
    forkable = verify_pool.can_fork()  # False already when earlier tests left threads behind
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not verify_pool.can_fork()
        assert verify_pool.context().get_start_method() != "fork"
        assert parallel_clean(root, run_id, 2)
        assert assert_same(root, run_id, 2)["ok"]
    finally:
        stop.set()
        thread.join()
    assert verify_pool.can_fork() == forkable


_VERIFY_FOREVER = """
import sys
from abstractruntime.storage import verify_parallel, verify_pool
from abstractruntime.storage.verify import verify_run
verify_parallel.PARALLEL_MIN_BYTES = 1
while True:
    assert verify_run(sys.argv[1], sys.argv[2], jobs=3).ok
"""


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _running_with(argument: str) -> set[int]:
    """Processes whose command line holds ``argument`` (forked workers keep their parent's)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argument.encode() in args and _alive(int(entry.name)):
                found.add(int(entry.name))
    return found


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3, 0.6])
def test_killing_verify_leaves_no_worker_behind(long_run: tuple[Path, str], tmp_path: Path, delay: float) -> None:
    """kill -9 of a verify while its workers start or scan (each verify makes a new pool): every
    worker, however late it started, notices its parent is gone and exits."""
    import shutil
    import subprocess
    import sys
    import time

    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("needs /proc/<pid>/task/<tid>/children")
    source, run_id = long_run
    root = tmp_path / "verified"  # a path of its own: the processes carrying it are this test's
    shutil.copytree(source, root)
    proc = subprocess.Popen([sys.executable, "-c", _VERIFY_FOREVER, str(root), run_id])
    try:
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while not workers and time.monotonic() < deadline:
            workers = _children(proc.pid)
            time.sleep(0.01)
        assert workers, "verify started no worker"
        time.sleep(delay)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while _running_with(str(root)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running_with(str(root)), "a worker outlived its killed parent"
    finally:
        proc.kill()
        proc.wait()
        for pid in _running_with(str(root)):
            os.kill(pid, 9)


def test_a_worker_that_starts_after_its_parent_died_exits() -> None:
    """The pool's maker is named to the worker: one whose parent is already gone when it starts
    (killed between the fork and the initializer) does not take its new parent for it."""
    import subprocess
    import sys

    script = ("import time\nfrom abstractruntime.storage.verify_pool import start_worker\n"
              "start_worker(2**22 + 12345)\nprint('watching', flush=True)\n"  # a pid that is not its parent's
              "time.sleep(30)\nprint('still here')\n")
    done = subprocess.run([sys.executable, "-c", script], timeout=20, capture_output=True, text=True)
    # Ended by its watcher (at once, or right after it said it watches), not by an error.
    assert done.returncode == 1 and done.stderr == "" and "still here" not in done.stdout, (done.stdout, done.stderr)


def test_jobs_must_be_a_positive_whole_number(long_run: tuple[Path, str]) -> None:
    from abstractruntime.core.errors import InvalidInputError

    root, run_id = long_run
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidInputError):
            verify_run(root, run_id, jobs=bad)  # type: ignore[arg-type]


# -- verify --all on several cores -------------------------------------------------------------------

def test_verify_store_in_parallel_gives_the_same_reports_in_order(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Small runs go to worker processes, the long one is split across cores by the parent."""
    root = tmp_path / "store"
    grow(root, "big", steps=40)
    for n in range(20):
        grow(root, f"r{n:02d}", steps=3)
    monkeypatch.setattr(verify_parallel, "PARALLEL_MIN_BYTES", 20_000)
    assert (root / "runs" / "big" / "ledger.jsonl").stat().st_size > 20_000
    assert (root / "runs" / "r00" / "ledger.jsonl").stat().st_size < 20_000
    lines = Lines(root / "runs" / "r07")
    _edit(lines, 2)
    lines.save()
    seen: dict[int, list[str]] = {1: [], 2: []}
    docs = {}
    for jobs in (1, 2):
        reports = verify_store(root, jobs=jobs, progress=lambda done, total, r, j=jobs: seen[j].append(r.run_id))
        docs[jobs] = [r.to_dict() for r in reports]
    assert docs[1] == docs[2]
    assert seen[1] == seen[2] == sorted(seen[1])
    assert [d["run_id"] for d in docs[1] if not d["ok"]] == ["r07"]


def _dying_batch(run_ids: list[str]) -> Any:
    if os.getpid() != _PARENT:
        os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("the parent verifies no batch")


def test_a_killed_store_worker_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    for n in range(4):
        grow(root, f"r{n}", steps=3)
    monkeypatch.setattr(verify_parallel, "PARALLEL_MIN_BYTES", 1 << 30)
    _forked_workers(monkeypatch)
    monkeypatch.setattr(verify_pool, "verify_batch", _dying_batch)
    with pytest.raises(StorageError, match="worker process died"):
        verify_store(root, jobs=2)


# -- properties ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def property_ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, bytes]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(session, "CHECKPOINT_EVERY", 5)
        patch.setattr(session, "ANCHOR_EVERY", 8)
        root = tmp_path_factory.mktemp("prop") / "store"
        run_dir = grow(root, "prop", steps=40)
    return root, "prop", (run_dir / "ledger.jsonl").read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.floats(0, 1, exclude_max=True), byte=st.integers(0, 255))
def test_parallel_and_one_process_agree_on_any_single_byte_edit(property_ledger: tuple[Path, str, bytes],
                                                                where: float, byte: int) -> None:
    root, run_id, data = property_ledger
    at = int(where * len(data))
    path = root / "runs" / run_id / "ledger.jsonl"
    try:
        path.write_bytes(data[:at] + bytes([byte]) + data[at + 1:])
        one = verify_run(root, run_id, jobs=1).to_dict()
        assert verify_run(root, run_id, jobs=3).to_dict() == one
        if data[at] != byte:
            assert not parallel_clean(root, run_id, 3) or one["ok"]
    finally:
        path.write_bytes(data)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)


def _setter(run: RunState, ctx: Any) -> StepPlan:
    i = run.vars.get("i", 0)
    values = run.vars["values"]
    run.vars["i"] = i + 1
    if i >= len(values):
        return StepPlan("set", complete_output={"n": i})
    run.vars[f"v{i % 3}"] = values[i]
    return StepPlan("set", next_node="set")


SETTER = WorkflowSpec("setter", "set", {"set": _setter})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_values, min_size=20, max_size=40))
def test_parallel_and_one_process_agree_on_random_ledgers(tmp_path_factory: pytest.TempPathFactory,
                                                          values: list[Any]) -> None:
    from abstractruntime.core.errors import InvalidInputError

    root = tmp_path_factory.mktemp("random") / "store"
    try:
        grow(root, "rand", steps=0, workflow=SETTER, vars={"values": values})
    except InvalidInputError:
        return  # a value JSON (RFC 8785) cannot carry: refused before anything is written
    one = verify_run(root, "rand", jobs=1).to_dict()
    assert one["ok"], one["problems"]
    assert one["count"] > len(values)
    assert parallel_clean(root, "rand", 3)
    assert verify_run(root, "rand", jobs=3).to_dict() == one


_keys = st.text(alphabet=st.characters(codec="utf-8"), max_size=5)
_docs = st.recursive(_scalars | st.text(alphabet=st.characters(codec="utf-8"), max_size=5),
                     lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)),
                     max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(value=_docs, spaced=st.booleans(), hash_text=st.sampled_from(["a" * 64, "", 'x"\\y']))
def test_the_one_parse_check_never_accepts_what_the_careful_check_refuses(value: Any, spaced: bool,
                                                                          hash_text: str) -> None:
    record = {"format": 3, "seq": 1, "kind": "node", "result": value, "record_hash": hash_text}
    try:
        body = jcs(record)
    except Exception:
        body = json.dumps(record, sort_keys=True).encode()
    if spaced:
        body = json.dumps(json.loads(body), sort_keys=True, ensure_ascii=False).encode()
    fast = canonical_record(body)
    if fast is None:
        return
    doc, digest = fast
    assert doc == loads_strict(body)
    assert is_jcs_line(body, loads_strict(body))
    assert digest == record_hash(doc)


@pytest.mark.parametrize("line", [
    b'{"format":3,"record_hash":"a","x":1.0}', b'{"format":3,"record_hash":"a","x":1e-07}',
    b'{"format":3,"record_hash":"a","x":9007199254740993}', b'{"format":3,"record_hash":"a","x":NaN}',
    b'{"format":3,"record_hash":"a","x":-0}', b'{"format":3,"format":3,"record_hash":"a"}',
    b' {"format":3,"record_hash":"a"}', b'{"format":3,"record_hash":"a","x":"\\ud800"}',
    '{"format":3,"record_hash":"a","x":{"\ue000":1,"\U0001f600":2}}'.encode(),
    b'{"format":3,"record_hash":"a","signature":{}}', b'{"format":2,"record_hash":"a"}',
])
def test_lines_the_one_parse_check_leaves_to_the_careful_one(line: bytes) -> None:
    assert canonical_record(line) is None


@pytest.mark.parametrize("change", ["duplicated", "reversed", "offset mid-line", "offset past the end",
                                    "offset zero", "every anchor at the first one's place", "one in a thousand"])
def test_anchors_rearranged_change_nothing(long_run: tuple[Path, str], change: str) -> None:
    """Anchors repeated, out of order, or pointing inside a line or past the ledger: the run is still clean."""
    root, run_id = long_run
    path = root / "runs" / run_id / "anchors.jsonl"
    docs = [json.loads(line) for line in path.read_bytes().splitlines()]
    if change == "duplicated":
        docs = [d for doc in docs for d in (doc, doc)]
    elif change == "reversed":
        docs.reverse()
    elif change == "offset mid-line":
        for doc in docs:
            doc["offset"] -= 5
    elif change == "offset past the end":
        for doc in docs:
            doc["offset"] += 1 << 40
    elif change == "offset zero":
        for doc in docs:
            doc["offset"] = 0
    elif change == "every anchor at the first one's place":
        docs = [{**doc, "offset": docs[0]["offset"], "seq": docs[0]["seq"]} for doc in docs]
    else:
        docs = docs[:1] * 1000
    path.write_bytes(b"".join(json.dumps(d).encode() + b"\n" for d in docs))
    assert assert_same(root, run_id, 3)["ok"]


def test_a_ledger_torn_where_an_anchor_points_is_reported_in_parallel_as_in_one_process(
        long_run: tuple[Path, str]) -> None:
    """The line an anchor ends at loses its last bytes: the anchor points past a torn line."""
    root, run_id = long_run
    run_dir = root / "runs" / run_id
    anchor = json.loads((run_dir / "anchors.jsonl").read_bytes().splitlines()[0])
    ledger = run_dir / "ledger.jsonl"
    data = ledger.read_bytes()
    at = anchor["offset"]
    assert data[at - 1:at] == b"\n"
    ledger.write_bytes(data[:at - 10] + b"\n" + data[at:])
    assert not parallel_clean(root, run_id, 3)
    assert not assert_same(root, run_id, 3)["ok"]
