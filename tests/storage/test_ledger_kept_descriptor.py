"""The live ledger file's descriptor kept between appends: whatever happens to the run's files
between two appends (the file replaced, truncated, appended to, removed, sealed into a segment by
another writer, the run directory swapped, the run's lock file removed while it is held), the next
append does exactly what an append that opens the file afresh does — the same records, the same
error — and never writes into a file that is no longer the run's live ledger.

Each scenario is played twice on copies of one store, with the kept descriptor and with none
kept (``KEPT_DESCRIPTORS = 0``: every append opens the file, as before), on a fixed clock, and
the two must end with the same outcome and the same bytes in every ledger file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from abstractruntime.core import session
from abstractruntime.core.clock import FixedClock
from abstractruntime.core.errors import AbstractRuntimeError
from abstractruntime.core.models import Effect, EffectType, RunState, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage import ledger_files
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

REPO = Path(__file__).resolve().parents[2]
CLOCK = "2030-01-01T00:00:00+00:00"
SEGMENT_RECORDS = 1000


@pytest.fixture(autouse=True)
def _checkpoint_every_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint (and so a segment check) at the end of every tick."""
    monkeypatch.setattr(session, "CHECKPOINT_EVERY", 1)


def _flow() -> WorkflowSpec:
    """Effects forever: each node a ``tool_calls`` effect counted into ``n``."""
    def node(run: RunState, ctx: Any) -> StepPlan:
        run.vars["n"] = run.vars.get("n", 0) + 1
        return StepPlan("e", next_node="e", effect=Effect(EffectType.TOOL_CALLS, {"n": run.vars["n"]}, "last"))

    return WorkflowSpec("kept", "e", {"e": node})


def _store(root: Path, **kwargs: Any) -> FileStore:
    return FileStore(root, durability="none", **kwargs)


def _runtime(store: FileStore, hook: Optional[Callable[[], None]] = None) -> Any:
    def tool(run: RunState, effect: Any) -> Any:
        if hook is not None:
            hook()
        return EffectOutcome.completed({"ok": True})

    return store.runtime(clock=FixedClock(CLOCK), effect_handlers={EffectType.TOOL_CALLS: tool})


# What differs between two plays of one scenario: the wall-clock time of each record, and the
# hashes that cover it.
_VARYING = re.compile(rb'"(at|created_at|updated_at)":"[^"]*"|"[0-9a-f]{64}"')


def _ledger_files(root: Path) -> dict[str, bytes]:
    """Every ledger file of ``r1`` (segments too), with times and hashes blanked."""
    run = root / "runs" / "r1"
    found = {p.relative_to(run).as_posix(): _VARYING.sub(b'"~"', p.read_bytes()) for p in run.rglob("*.jsonl")
             if p.name not in ("anchors.jsonl", "secrets.jsonl")}
    return dict(sorted(found.items()))


def _prepared(tmp_path: Path) -> Path:
    """A store whose run ``r1`` has had a few effect steps."""
    root = tmp_path / "base"
    store = _store(root, segment_records=SEGMENT_RECORDS)
    rt = _runtime(store)
    rt.start(workflow=_flow(), run_id="r1")
    rt.tick(workflow=_flow(), run_id="r1", max_steps=2)
    store.close()
    return root


def _play(base: Path, where: Path, keep: bool, change: Callable[[Path], None],
          monkeypatch: pytest.MonkeyPatch, *, mid_tick: bool = False) -> tuple[Any, dict[str, bytes], bool]:
    """Tick a warm runtime, ``change`` the files (between ticks, or inside the next tick's
    handler), tick again: the outcome, the ledger files' bytes and whether the run verifies."""
    shutil.copytree(base, where)
    monkeypatch.setattr(ledger_files, "KEPT_DESCRIPTORS", 32 if keep else 0)
    changed: list[bool] = []
    armed: list[bool] = []  # the change comes in the second tick

    def hook() -> None:
        if mid_tick and armed and not changed:
            changed.append(True)
            change(where)

    store = _store(where, segment_records=SEGMENT_RECORDS)
    rt = _runtime(store, hook)
    rt.tick(workflow=_flow(), run_id="r1", max_steps=2)
    assert ("r1" in store.ledger._held) is keep  # the descriptor the next append may use
    armed.append(True)
    if not mid_tick:
        change(where)
    try:
        state = rt.tick(workflow=_flow(), run_id="r1", max_steps=2)
        outcome: Any = ("ran", state.status.value, state.vars.get("n"), state.error)
    except AbstractRuntimeError as exc:
        outcome = ("error", type(exc).__name__)
    finally:
        store.close()
    assert not store.ledger._held
    try:
        ok = verify_run(where, "r1").ok
    except AbstractRuntimeError:
        ok = False
    return outcome, _ledger_files(where), ok


def _both(tmp_path: Path, change: Callable[[Path], None], monkeypatch: pytest.MonkeyPatch, *,
          mid_tick: bool = False) -> tuple[Any, dict[str, bytes], bool]:
    base = _prepared(tmp_path)
    kept = _play(base, tmp_path / "kept", True, change, monkeypatch, mid_tick=mid_tick)
    fresh = _play(base, tmp_path / "fresh", False, change, monkeypatch, mid_tick=mid_tick)
    assert kept == fresh
    return kept


@pytest.fixture(params=["between ticks", "inside a handler"])
def inside(request: pytest.FixtureRequest) -> bool:
    """When the files change: between two ticks (before the open), or while a handler runs (after
    the open and the intent's append, before the outcome's)."""
    return bool(request.param == "inside a handler")


def _live(root: Path) -> Path:
    return root / "runs" / "r1" / "ledger.jsonl"


def _keep_old(root: Path) -> Path:
    """A hard link to the live file as it is now (to see nothing more is written into that inode)."""
    old = root / "old-inode"
    os.link(_live(root), old)
    return old


def test_an_untouched_ledger_goes_on_through_the_kept_descriptor(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    outcome, files, ok = _both(tmp_path, lambda root: None, monkeypatch)
    assert outcome == ("ran", "running", 6, None) and ok


def test_a_warm_runtime_appends_through_one_descriptor(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    rt = _runtime(store)
    rt.start(workflow=_flow(), run_id="r1")
    rt.tick(workflow=_flow(), run_id="r1", max_steps=2)
    held = store.ledger._held["r1"]
    for _ in range(3):
        rt.tick(workflow=_flow(), run_id="r1", max_steps=2)
        assert store.ledger._held["r1"] is held
    store.close()
    assert verify_run(tmp_path / "s", "r1").ok


def test_the_file_replaced_by_a_copy_is_written_to_and_the_old_inode_is_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: bool) -> None:
    old_sizes: list[int] = []

    def replace(root: Path) -> None:
        old = _keep_old(root)
        old_sizes.append(old.stat().st_size)
        copy = root / "copy.tmp"
        shutil.copyfile(_live(root), copy)
        os.replace(copy, _live(root))

    outcome, files, ok = _both(tmp_path, replace, monkeypatch, mid_tick=inside)
    assert outcome[0] == "ran" and ok
    for where in ("kept", "fresh"):
        assert (tmp_path / where / "old-inode").stat().st_size == old_sizes[0]  # nothing went to the old file
        assert _live(tmp_path / where).stat().st_size > old_sizes[0]


def test_the_file_replaced_by_an_edited_copy_of_the_same_size_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: bool) -> None:
    def replace(root: Path) -> None:
        old = _keep_old(root)
        data = old.read_bytes()
        at = data.index(b'"at":"', data.rfind(b"\n", 0, len(data) - 1)) + len(b'"at":"')
        copy = root / "copy.tmp"
        copy.write_bytes(data[:at] + b"1" + data[at + 1:])
        os.replace(copy, _live(root))

    outcome, files, ok = _both(tmp_path, replace, monkeypatch, mid_tick=inside)
    assert outcome == ("error", "CorruptRecordError") and not ok
    for where in ("kept", "fresh"):
        old = (tmp_path / where / "old-inode").read_bytes()
        assert len(old) == len(_live(tmp_path / where).read_bytes())


@pytest.mark.parametrize("cut", ["last record", "to nothing", "torn tail"])
def test_the_file_truncated_between_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: str, inside: bool) -> None:
    sizes: list[int] = []

    def truncate(root: Path) -> None:
        data = _live(root).read_bytes()
        keep = {"last record": data.rfind(b"\n", 0, len(data) - 1) + 1, "to nothing": 0,
                "torn tail": len(data) - 5}[cut]
        os.truncate(_live(root), keep)
        sizes.append(keep)

    outcome, files, ok = _both(tmp_path, truncate, monkeypatch, mid_tick=inside)
    # The checkpoint is ahead of what is left: the open refuses the run, and nothing is written
    # after the cut as if the removed records were still there.
    # (Inside a handler the writer's own head is gone: a conflict.)
    assert outcome == ("error", "LedgerConflictError" if inside else "VerificationFailedError")
    for where in ("kept", "fresh"):
        assert _live(tmp_path / where).stat().st_size <= sizes[0]


def test_an_outside_line_appended_between_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: bool) -> None:
    def append(root: Path) -> None:
        with open(_live(root), "ab") as handle:
            handle.write(b'{"seq":999,"kind":"forged"}\n')

    outcome, files, ok = _both(tmp_path, append, monkeypatch, mid_tick=inside)
    assert outcome == ("error", "CorruptRecordError") and not ok
    assert files["ledger.jsonl"].endswith(b'{"seq":999,"kind":"forged"}\n')  # nothing written after it


def test_the_file_removed_between_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: bool) -> None:
    sizes: list[int] = []

    def remove(root: Path) -> None:
        old = _keep_old(root)
        sizes.append(old.stat().st_size)
        _live(root).unlink()

    outcome, files, ok = _both(tmp_path, remove, monkeypatch, mid_tick=inside)
    for where in ("kept", "fresh"):
        assert (tmp_path / where / "old-inode").stat().st_size == sizes[0]


def test_the_file_sealed_into_a_segment_by_another_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: bool) -> None:
    sealed: list[int] = []

    def another_writer(root: Path) -> None:
        old = _keep_old(root)
        # Its checkpoint seals the live file (inside a handler: a writer that lost the lock).
        proc = _other_process_ticks(root, bypass_lock=inside, segment_records=2)
        assert proc.returncode == 0, proc.stderr
        assert (root / "runs" / "r1" / "segments").is_dir()
        sealed.append(old.stat().st_size)

    outcome, files, ok = _both(tmp_path, another_writer, monkeypatch, mid_tick=inside)
    assert ok and outcome[0] == ("error" if inside else "ran")
    assert any(name.startswith("segments/") for name in files)
    for where in ("kept", "fresh"):
        segment = tmp_path / where / "runs" / "r1" / "segments" / "000001.jsonl"
        assert segment.stat().st_size == sealed[0]  # nothing appended to the sealed segment
        assert segment.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1].find(b'"kind":"segment"') >= 0


def test_a_stray_in_a_new_segments_directory_is_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: bool) -> None:
    def stray(root: Path) -> None:
        (root / "runs" / "r1" / "segments").mkdir()
        first = _live(root).read_bytes().split(b"\n")[0] + b"\n"
        (root / "runs" / "r1" / "segments" / "000001.jsonl").write_bytes(first)

    outcome, files, ok = _both(tmp_path, stray, monkeypatch, mid_tick=inside)
    assert outcome == ("error", "CorruptRecordError")


def test_the_run_directory_swapped_for_a_symlink_to_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: bool) -> None:
    def swap(root: Path) -> None:
        run = root / "runs" / "r1"
        moved = root / "moved-r1"
        os.rename(run, moved)
        os.symlink(moved, run)

    outcome, files, ok = _both(tmp_path, swap, monkeypatch, mid_tick=inside)
    assert outcome == ("error", "StorageError")


def _other_process_ticks(root: Path, *, bypass_lock: bool, segment_records: int = SEGMENT_RECORDS
                         ) -> subprocess.CompletedProcess[str]:
    """Another process ticks ``r1`` twice (``bypass_lock``: as a writer that lost the run's lock
    while it worked, which takes no lock)."""
    code = ("import contextlib, sys; from tests.storage import test_ledger_kept_descriptor as t; "
            "t.session.CHECKPOINT_EVERY = 1; "
            f"store = t._store(t.Path(sys.argv[1]), segment_records={segment_records}); "
            + ("store.runs.lock = lambda run_id, wait=0: contextlib.nullcontext(); " if bypass_lock else "")
            + "t._runtime(store).tick(workflow=t._flow(), run_id='r1', max_steps=2)")
    return subprocess.run([sys.executable, "-c", code, str(root)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_the_lock_file_removed_while_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a handler the run's ``.lock`` is removed and another process tries the run: it is
    still locked out (the run directory is locked too), and the holder goes on."""
    def remove_and_try(root: Path) -> None:
        (root / "runs" / "r1" / ".lock").unlink()
        proc = _other_process_ticks(root, bypass_lock=False)
        assert proc.returncode != 0 and "RunLockedError" in proc.stderr

    outcome, files, ok = _both(tmp_path, remove_and_try, monkeypatch, mid_tick=True)
    assert outcome == ("ran", "running", 6, None) and ok


def test_a_writer_that_lost_its_lock_appends_nothing_after_another_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a handler runs, another process appends to the run (taking no lock): the first
    writer's next append is a conflict, and the other writer's records end the ledger."""
    after: list[bytes] = []

    def another_writer(root: Path) -> None:
        proc = _other_process_ticks(root, bypass_lock=True)
        assert proc.returncode == 0, proc.stderr
        after.append(_live(root).read_bytes())

    outcome, files, ok = _both(tmp_path, another_writer, monkeypatch, mid_tick=True)
    assert outcome == ("error", "LedgerConflictError") and ok
    assert (tmp_path / "kept" / "runs" / "r1" / "ledger.jsonl").read_bytes() == after[0]
    assert (tmp_path / "fresh" / "runs" / "r1" / "ledger.jsonl").read_bytes() == after[1]


def test_a_forked_child_appends_through_its_own_descriptor(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = _store(root)
    rt = _runtime(store)
    rt.start(workflow=_flow(), run_id="r1")
    rt.tick(workflow=_flow(), run_id="r1", max_steps=2)
    held = store.ledger._held["r1"]
    pid = os.fork()
    if pid == 0:  # the child: appends, then leaves without running the parent's cleanups
        code = 1
        try:
            rt.tick(workflow=_flow(), run_id="r1", max_steps=2)
            code = 0 if store.ledger._held["r1"].forks != held.forks else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.fstat(held.fd).st_ino == _live(root).stat().st_ino  # the parent's descriptor is still open
    state = rt.tick(workflow=_flow(), run_id="r1", max_steps=2)  # sees the child's records, goes on after them
    assert state.vars["n"] == 6  # two steps each: the parent's first tick, the child's, this one
    store.close()
    assert verify_run(root, "r1").ok


def test_a_pruned_run_s_descriptor_is_closed(tmp_path: Path) -> None:
    from tests.retention_support import ask_workflow, later
    from abstractruntime.storage.prune import parse_age, prune_store

    store = _store(tmp_path / "s")
    rt = store.runtime()
    wf = ask_workflow()
    rt.start(workflow=wf, run_id="done")
    rt.tick(workflow=wf, run_id="done")
    rt.resume(workflow=wf, run_id="done", payload={"answer": "yes"})
    fd = store.ledger._held["done"].fd
    assert prune_store(store, finished_before=parse_age("30d"), now=later).pruned
    assert "done" not in store.ledger._held
    with pytest.raises(OSError):
        os.fstat(fd)
    store.close()


def test_descriptors_are_bounded_and_closed_with_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_files, "KEPT_DESCRIPTORS", 3)
    store = _store(tmp_path / "s")
    rt = _runtime(store)
    for k in range(6):
        rt.start(workflow=_flow(), run_id=f"r{k}")
        rt.tick(workflow=_flow(), run_id=f"r{k}", max_steps=1)
    fds = [held.fd for held in store.ledger._held.values()]
    assert 0 < len(fds) <= 3
    store.close()
    assert not store.ledger._held
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
