"""The file stores: ids and paths that stay under the store, and fsync."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from abstractruntime.core.errors import (
    InvalidIdError,
    StorageError,
)
from abstractruntime.core.models import (
    Effect,
    EffectType,
    RunState,
    RunStatus,
    StepPlan,
    StepRecord,
)
from abstractruntime.core.runtime import EffectOutcome, Runtime
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore

from file_store_support import save_run, append_one
from file_store_support import root, ledger, runs  # noqa: F401 - pytest fixtures


# -- ids and paths -------------------------------------------------------------------------

BAD_IDS = ["a/b", "..", "../escape", "/etc/passwd", "", ".hidden", "x" * 129, "a\x00b", "sp ace", "a/../../b"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_unsafe_run_ids_are_refused(runs: JsonFileRunStore, ledger: JsonlLedgerStore, bad: str, tmp_path: Path) -> None:
    before = sorted(p for p in tmp_path.rglob("*"))
    run = RunState(run_id=bad, workflow_id="wf", status=RunStatus.RUNNING, current_node="a")
    calls = [
        lambda: runs.load(bad), lambda: runs.save(run), lambda: runs.load_checkpoint(bad),
        lambda: runs.lock(bad).__enter__(), lambda: ledger.list(bad), lambda: ledger.head(bad),
        lambda: ledger.find_completed(bad, "k" * 32),
        lambda: ledger.append(StepRecord.start(run=run, node_id="a", effect=None)),
    ]
    for call in calls:
        with pytest.raises(InvalidIdError) as info:
            call()
        assert isinstance(info.value, ValueError) and info.value.code == "invalid_id"
    rt = Runtime(run_store=runs, ledger_store=ledger)
    wf = WorkflowSpec("wf", "a", {"a": lambda r, c: StepPlan(node_id="a", complete_output={})})
    with pytest.raises(InvalidIdError):
        rt.start(workflow=wf, run_id=bad)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_valid_id_edges_are_accepted(runs: JsonFileRunStore) -> None:
    for good in ["a", "A.b_c-9", "0" * 128, "run.v1"]:
        save_run(runs, good)
        assert runs.load(good).run_id == good


def test_symlinked_run_directory_is_refused(runs: JsonFileRunStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    other = JsonFileRunStore(outside, durability="none")
    other.save(RunState.new(workflow_id="wf", entry_node="a", run_id="r1"))
    other.close()
    target = outside / "runs" / "r1"
    (runs.base_dir / "runs").mkdir(exist_ok=True)
    (runs.base_dir / "runs" / "r1").symlink_to(target, target_is_directory=True)
    before = (target / "run.json").read_bytes()
    ledger = JsonlLedgerStore(runs.base_dir, durability="none")
    for call in (lambda: runs.load("r1"), lambda: runs.save(RunState.new(workflow_id="w", entry_node="a", run_id="r1")),
                 lambda: ledger.list("r1"), lambda: append_one(ledger, "r1", "x")):
        with pytest.raises(StorageError):
            call()
    assert (target / "run.json").read_bytes() == before and not (target / "ledger.jsonl").exists()

    # A symlink that stays inside the store is refused too.
    save_run(runs, "real")
    (runs.base_dir / "runs" / "alias").symlink_to(runs.base_dir / "runs" / "real", target_is_directory=True)
    with pytest.raises(StorageError):
        runs.load("alias")


def test_a_symlinked_runs_directory_is_refused_even_after_runs_were_opened(tmp_path: Path) -> None:
    # run_dir proves a run's path with two lstats (runs/ and runs/<id>), not a resolve of every
    # component: runs/ swapped for a symlink after the store looked at it is still refused.
    root = tmp_path / "store"
    runs, ledger = JsonFileRunStore(root, durability="none"), JsonlLedgerStore(root, durability="none")
    save_run(runs, "r1")
    append_one(ledger, "r1", "x")
    outside = tmp_path / "outside"
    other = JsonFileRunStore(outside, durability="none")
    save_run(other, "r2")
    other.close()
    before = (outside / "runs" / "r2" / "run.json").read_bytes()
    os.rename(root / "runs", tmp_path / "moved")
    (root / "runs").symlink_to(outside / "runs", target_is_directory=True)
    for call in (lambda: runs.load("r2"), lambda: save_run(runs, "r2"), lambda: save_run(runs, "r3"),
                 lambda: ledger.list("r2"), lambda: append_one(ledger, "r2", "y"), lambda: runs.lock("r2")):
        with pytest.raises(StorageError):
            call()
    # A store opened afresh refuses it too, and so does one whose runs/ points inside its own root.
    fresh = JsonFileRunStore(root, durability="none")
    with pytest.raises(StorageError):
        fresh.load("r2")
    (root / "runs").unlink()
    (root / "inner").mkdir()
    os.rename(tmp_path / "moved", root / "inner" / "runs")
    (root / "runs").symlink_to(root / "inner" / "runs", target_is_directory=True)
    with pytest.raises(StorageError):
        JsonFileRunStore(root, durability="none").load("r1")
    assert (outside / "runs" / "r2" / "run.json").read_bytes() == before
    assert sorted(p.name for p in (outside / "runs").iterdir()) == ["r2"]
    runs.close()
    fresh.close()


def test_a_run_directory_swapped_for_a_symlink_after_use_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    runs, ledger = JsonFileRunStore(root, durability="none"), JsonlLedgerStore(root, durability="none")
    save_run(runs, "r1")
    append_one(ledger, "r1", "x")
    assert runs.load("r1") is not None and len(ledger.list("r1")) == 1
    target = tmp_path / "elsewhere"
    os.rename(root / "runs" / "r1", target)
    (root / "runs" / "r1").symlink_to(target, target_is_directory=True)
    for call in (lambda: runs.load("r1"), lambda: ledger.list("r1"), lambda: append_one(ledger, "r1", "y")):
        with pytest.raises(StorageError):
            call()
    assert len((target / "ledger.jsonl").read_bytes().splitlines()) == 1
    # A plain file where the run directory should be is not taken for one either.
    (root / "runs" / "r1").unlink()
    (root / "runs" / "r1").write_bytes(b"not a directory")
    with pytest.raises(StorageError):
        save_run(runs, "r1")
    assert (root / "runs" / "r1").read_bytes() == b"not a directory"
    runs.close()


def test_symlinked_files_are_refused(runs: JsonFileRunStore, ledger: JsonlLedgerStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"do not touch\n")
    path = save_run(runs, "r1")
    ledger_path = path.parent / "ledger.jsonl"
    ledger_path.symlink_to(secret)
    for call in (lambda: ledger.list("r1"), lambda: append_one(ledger, "r1", "x"), lambda: ledger.head("r1")):
        with pytest.raises(StorageError):
            call()
    path.unlink()
    path.symlink_to(secret)
    with pytest.raises(StorageError):
        runs.load("r1")
    with pytest.raises(StorageError):
        runs.save(RunState.new(workflow_id="wf", entry_node="a", run_id="r1"))
    assert secret.read_bytes() == b"do not touch\n"


def test_permissions_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        root = tmp_path / "store"
        runs, ledger = JsonFileRunStore(root, durability="fsync"), JsonlLedgerStore(root, durability="fsync")
        rt = Runtime(run_store=runs, ledger_store=ledger)
        wf = WorkflowSpec("wf", "a", {"a": lambda r, c: StepPlan(node_id="a", effect=Effect(
            type=EffectType.ASK_USER, payload={"prompt": "?"}), next_node="a")})
        run_id = rt.start(workflow=wf)
        rt.tick(workflow=wf, run_id=run_id)
        runs.list_runs()
        runs.close()
    finally:
        os.umask(old)
    run_dir = root / "runs" / run_id
    for directory in (root, root / "runs", run_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    files = [run_dir / "run.json", run_dir / "ledger.jsonl", run_dir / ".lock", root / "index.sqlite3"]
    files += [p for p in root.glob("index.sqlite3-*")]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


# -- fsync ---------------------------------------------------------------------------------


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


@pytest.mark.parametrize("durability", ["fsync", "none"])
def test_durability_setting(root: Path, durability: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = _count_fsyncs(monkeypatch)
    at_handler: list[tuple[int, list[str]]] = []
    runs, ledger = JsonFileRunStore(root, durability=durability), JsonlLedgerStore(root, durability=durability)

    def handler(run: RunState, effect: Effect) -> EffectOutcome:
        on_disk = JsonlLedgerStore(root, durability="none").list(run.run_id)
        at_handler.append((len(fsyncs), [r["status"] for r in on_disk if r["effect"]]))
        return EffectOutcome.completed({"ok": True})

    rt = Runtime(run_store=runs, ledger_store=ledger, effect_handlers={EffectType.LLM_CALL: handler})
    wf = WorkflowSpec("wf", "a", {
        "a": lambda r, c: StepPlan(node_id="a", effect=Effect(type=EffectType.LLM_CALL, payload={}), next_node="b"),
        "b": lambda r, c: StepPlan(node_id="b", complete_output={"ok": True})})
    run_id = rt.start(workflow=wf)
    started = len(fsyncs)
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.COMPLETED
    runs.close()
    # Whatever the setting, the intent is on disk before the handler runs.
    assert at_handler[0][1] == ["started"]
    if durability == "none":
        assert fsyncs == []
    else:
        assert started >= 2  # the start record and the first checkpoint
        assert at_handler[0][0] > started  # the intent was fsynced before the handler ran
        assert len(fsyncs) > at_handler[0][0]  # and the result after it


def test_bad_durability_value() -> None:
    with pytest.raises(ValueError):
        JsonFileRunStore("/tmp/never-created-abstractruntime", durability="sometimes")  # type: ignore[arg-type]
