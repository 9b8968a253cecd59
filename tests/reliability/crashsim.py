"""Crash-state simulation: record a run's file operations, rebuild every state a crash could leave.

:func:`record` runs a small scripted workload (two runs, every effect kind, a snapshot, a
restore, a bookmark, a cancel) on a file store with ``durability="fsync"`` and records each
file operation of the storage layer (see :mod:`.fsops`) plus an *acknowledgement* after each
call that returned to its caller.

:class:`Model` replays the operations on a model of POSIX semantics:

- a file's data is durable up to its last ``fsync``; later writes may be lost, kept, or
  kept in part (a prefix of an append, possibly followed by zero-filled blocks);
- a directory entry (a new file, a rename, an unlink, a new directory) is durable once the
  directory itself was fsynced; until then either the old or the new entry may survive,
  independently for each name;
- a directory whose own entry was lost takes its whole subtree with it.

For the crash after each mutating operation, :func:`crash_states` builds the pessimistic
state (only what was fsynced), the kill -9 state (everything written, as the page cache
keeps it) and ``samples`` random mixes. :func:`check_state` then opens the store and checks
that every file loads, every run verifies, every acknowledged step, snapshot and bookmark
is still there, that each run can be driven to its end, and that recovery never executes an
effect whose completed record survived. The SQLite query index is a rebuildable cache and
is left out of the model: crash states have none, so opening one rebuilds it from the files.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from abstractruntime.core.errors import RunNotFoundError
from abstractruntime.core.models import Effect, EffectType, RunStatus, WaitReason
from abstractruntime.core.restore import restore_snapshot, take_snapshot
from abstractruntime.core.runtime import Runtime
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry
from abstractruntime.storage.bookmarks import read_bookmarks
from abstractruntime.storage.snapshots import JsonSnapshotStore
from abstractruntime.storage.store import FileStore

from . import checks, fsops, workload

MUTATING = ("write", "fsync", "replace", "truncate", "unlink", "mkdir")


def mini_spec() -> WorkflowSpec:
    """A short workflow with a pure step, a counted effect, a retried effect, a question,
    a sync subworkflow and a timer in the past."""
    order = [
        ("a", None),
        ("tool", Effect(EffectType.TOOL_CALLS, {"m": 1}, result_key="tool")),
        ("flaky", Effect(EffectType.LLM_CALL, {"prompt": "m"}, result_key="flaky")),
        ("ask", Effect(EffectType.ASK_USER, {"prompt": "ok?"}, result_key="answer")),
        ("b", None),
        ("sub", Effect(EffectType.START_SUBWORKFLOW, {"workflow_id": "crashy_child"}, result_key="child")),
        ("past", Effect(EffectType.WAIT_UNTIL, {"until": "2000-01-01T00:00:00+00:00"}, result_key="timer")),
    ]
    nodes: dict[str, Any] = {}
    for i, (node_id, effect) in enumerate(order):
        nxt = order[i + 1][0] if i + 1 < len(order) else "done"
        nodes[node_id] = workload._pure(node_id, nxt) if effect is None else workload._effect(node_id, nxt, effect)
    nodes["done"] = workload._finish("done")
    return WorkflowSpec("mini", "a", nodes)


def event_spec() -> WorkflowSpec:
    """Waits for an event, then completes."""
    return WorkflowSpec("evt", "w", {
        "w": workload._effect("w", "e2", Effect(EffectType.WAIT_EVENT, {"wait_key": "evt:b"}, result_key="evt")),
        "e2": workload._pure("e2", "done"),
        "done": workload._finish("done"),
    })


def sim_registry() -> WorkflowRegistry:
    """The workflows a crash state may contain runs of."""
    reg = WorkflowRegistry()
    for spec in (mini_spec(), event_spec(), workload.child_spec()):
        reg.register(spec)
    return reg


def make_runtime(store: FileStore, log: workload.EffectLog) -> Runtime:
    """The runtime the workload and the recovery use."""
    return Runtime(run_store=store.runs, ledger_store=store.ledger, effect_handlers=workload.handlers(log),
                   effect_policy=workload.policy(), workflow_registry=sim_registry())


def prepare_root(root: Path) -> None:
    """An initialised store (root, ``runs/``, ``snapshots/``), made durable before recording."""
    (root / "runs").mkdir(parents=True)
    (root / "snapshots").mkdir()


def record(root: Path, side: Path, *, drop_fsync_in: frozenset[tuple[str, ...]] = frozenset()) -> list[tuple[Any, ...]]:
    """Run the scripted workload on ``root``; returns the recorded operations and acks."""
    ops: list[tuple[Any, ...]] = []
    log = workload.EffectLog(side / "effects.log")
    with fsops.intercept(ops.append, drop_fsync_in=drop_fsync_in):
        store = FileStore(root)
        try:
            rt = make_runtime(store, log)
            mini, evt = mini_spec(), event_spec()

            def ack(run_id: str) -> None:
                head = rt.get_checkpoint(run_id).ledger
                ops.append(("ack", run_id, head.seq, head.head_hash))

            rt.start(workflow=mini, run_id="A")
            ack("A")
            state = rt.tick(workflow=mini, run_id="A")
            ack("A")
            assert state.status is RunStatus.WAITING, state
            state = rt.resume(workflow=mini, run_id="A", wait_key=state.waiting.wait_key, payload={"answer": "y"})
            ack("A")
            assert state.status is RunStatus.COMPLETED, state
            rt.start(workflow=evt, run_id="B")
            ack("B")
            rt.tick(workflow=evt, run_id="B")
            ack("B")
            snap = take_snapshot(rt, "B", name="before-cancel")
            store.snapshots.save(snap)
            ops.append(("ack_snapshot", snap.snapshot_id))
            mark = store.bookmarks.add("A", "audited")
            ops.append(("ack_bookmark", "A", mark.name, mark.seq, mark.record_hash))
            rt.cancel_run("B", reason="test")
            ack("B")
            restore_snapshot(rt, snap, workflow=evt)
            ack("B")
            state = rt.resume(workflow=evt, run_id="B", wait_key="evt:b", payload={"event": "go"})
            ack("B")
            assert state.status is RunStatus.COMPLETED, state
        finally:
            store.close()
    return ops


@dataclass
class _Inode:
    data: bytearray = field(default_factory=bytearray)
    durable: bytes = b""


@dataclass
class _Dir:
    entries: dict[str, tuple[str, Any]] = field(default_factory=dict)
    durable: dict[str, tuple[str, Any]] = field(default_factory=dict)


class Model:
    """The file tree under ``root`` as a POSIX file system would hold it, volatile and durable."""

    def __init__(self, root: Path) -> None:
        self.root = os.fspath(root)
        self.inodes: dict[int, _Inode] = {}
        self.dirs: dict[str, _Dir] = {}
        self.fds: dict[int, list[Any]] = {}
        self._next = 0
        self._scan(self.root)

    def _new_inode(self, data: bytes = b"", durable: bytes = b"") -> int:
        self._next += 1
        self.inodes[self._next] = _Inode(bytearray(data), durable)
        return self._next

    def _scan(self, path: str) -> None:
        """Whatever exists when recording starts is durable."""
        d = self.dirs[path] = _Dir()
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if os.path.isdir(full):
                self._scan(full)
                d.entries[name] = ("d", full)
            elif not name.startswith("index.sqlite3"):
                data = Path(full).read_bytes()
                d.entries[name] = ("f", self._new_inode(data, data))
        d.durable = dict(d.entries)

    def _lookup(self, path: str) -> Optional[tuple[str, Any]]:
        parent, name = os.path.split(path)
        d = self.dirs.get(parent)
        return None if d is None else d.entries.get(name)

    def apply(self, op: tuple[Any, ...]) -> None:
        """Apply one recorded operation."""
        kind = op[0]
        if kind == "open":
            _, path, flags, fd, _existed = op
            if path in self.dirs:
                self.fds[fd] = ["d", path]
                return
            entry = self._lookup(path)
            if entry is None:
                if not flags & os.O_CREAT or os.path.dirname(path) not in self.dirs:
                    return  # outside the model (e.g. a read of a file the model does not track)
                entry = ("f", self._new_inode())
                self.dirs[os.path.dirname(path)].entries[os.path.basename(path)] = entry
            if flags & getattr(os, "O_TRUNC", 0):
                del self.inodes[entry[1]].data[:]
            self.fds[fd] = ["f", entry[1], 0, bool(flags & os.O_APPEND)]
        elif kind == "write":
            handle = self.fds.get(op[1])
            if handle is None or handle[0] != "f":
                return
            data = self.inodes[handle[1]].data
            pos = len(data) if handle[3] else handle[2]
            data[pos:pos + len(op[2])] = op[2]
            handle[2] = pos + len(op[2])
        elif kind == "fsync":
            handle = self.fds.get(op[1])
            if handle is None:
                return
            if handle[0] == "d":
                d = self.dirs[handle[1]]
                d.durable = dict(d.entries)
            else:
                inode = self.inodes[handle[1]]
                inode.durable = bytes(inode.data)
        elif kind == "close":
            self.fds.pop(op[1], None)
        elif kind == "replace":
            src_parent, src_name = os.path.split(op[1])
            dst_parent, dst_name = os.path.split(op[2])
            entry = self.dirs[src_parent].entries.pop(src_name)
            self.dirs[dst_parent].entries[dst_name] = entry
        elif kind == "truncate":
            entry = self._lookup(op[1])
            if entry is not None:
                del self.inodes[entry[1]].data[op[2]:]
        elif kind == "unlink":
            parent, name = os.path.split(op[1])
            if parent in self.dirs:
                self.dirs[parent].entries.pop(name, None)
        elif kind == "mkdir":
            path = op[1]
            self.dirs[path] = _Dir()
            self.dirs[os.path.dirname(path)].entries[os.path.basename(path)] = ("d", path)

    def materialize(self, dest: Path, mode: str, rng: Optional[random.Random] = None) -> str:
        """Write one crash state under ``dest``; ``mode`` is durable, volatile or random.

        Returns a digest of the state (identical states share recovery checks).
        """
        digest = hashlib.sha256()
        self._write_dir(self.root, dest, mode, rng, digest, "")
        return digest.hexdigest()

    def _write_dir(self, path: str, dest: Path, mode: str, rng: Optional[random.Random], digest: Any,
                   rel: str) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        d = self.dirs[path]
        for name in sorted(set(d.entries) | set(d.durable)):
            vol, dur = d.entries.get(name), d.durable.get(name)
            if vol == dur:
                entry = vol
            elif mode == "durable":
                entry = dur
            elif mode == "volatile":
                entry = vol
            else:
                assert rng is not None
                entry = rng.choice((vol, dur))
            if entry is None:
                continue
            if entry[0] == "d":
                digest.update(f"D {rel}/{name}\n".encode())
                self._write_dir(entry[1], dest / name, mode, rng, digest, f"{rel}/{name}")
            else:
                content = self._content(self.inodes[entry[1]], mode, rng)
                (dest / name).write_bytes(content)
                digest.update(f"F {rel}/{name} {len(content)}\n".encode() + content)

    @staticmethod
    def _content(inode: _Inode, mode: str, rng: Optional[random.Random]) -> bytes:
        data, durable = bytes(inode.data), inode.durable
        if data == durable or mode == "volatile":
            return data
        if mode == "durable":
            return durable
        assert rng is not None
        if not data.startswith(durable):
            return rng.choice((data, durable))
        extra = len(data) - len(durable)
        cut = rng.randint(0, extra)
        return rng.choice((
            data,
            durable,
            data[:len(durable) + cut],                                  # a prefix of the append
            data[:len(durable) + cut] + b"\x00" * (extra - cut),        # the rest zero-filled
        ))


@dataclass
class CrashReport:
    """What :func:`check_all` found."""

    operations: int = 0
    crash_points: int = 0
    states: int = 0
    distinct_states: int = 0
    violations: list[str] = field(default_factory=list)
    lost: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for reports."""
        return dict(self.__dict__)


def crash_points(ops: list[tuple[Any, ...]]) -> Iterator[int]:
    """Indices ``k`` such that a crash may leave the state after ``ops[:k]`` (before and after
    each mutating operation)."""
    yield 0
    for index, op in enumerate(ops):
        if op[0] in MUTATING or (op[0] == "open" and not op[4]):
            yield index + 1


def _acks(ops: list[tuple[Any, ...]], upto: int) -> dict[str, Any]:
    runs: dict[str, dict[int, str]] = {}
    snapshots: list[str] = []
    marks: list[tuple[str, str, int, str]] = []
    for op in ops[:upto]:
        if op[0] == "ack":
            runs.setdefault(op[1], {})[op[2]] = op[3]
        elif op[0] == "ack_snapshot":
            snapshots.append(op[1])
        elif op[0] == "ack_bookmark":
            marks.append(op[1:])
    return {"runs": runs, "snapshots": snapshots, "bookmarks": marks}


def _answer(run: Any) -> dict[str, Any]:
    reason = WaitReason(run.waiting.reason)
    if reason is WaitReason.USER:
        return {"answer": "y"}
    if reason is WaitReason.EVENT:
        return {"event": "go"}
    return workload.answer_for(run)


def recovery_problems(root: Path, side: Path) -> list[str]:
    """Drive every run of the crash state to its end; nothing may raise, no completed effect may rerun."""
    completed_before = checks.completed_effect_keys(root)
    log = workload.EffectLog(side / "recovery-effects.log")
    if log.path.exists():
        log.path.unlink()
    store = FileStore(root, durability="none")
    problems: list[str] = []
    try:
        rt = make_runtime(store, log)
        registry = sim_registry()
        for run_id in checks.run_ids(root):
            try:
                run = rt.get_state(run_id)  # rebuilt from the ledger when run.json is missing or torn
            except RunNotFoundError:
                continue  # an empty run directory: a start that wrote nothing durable
            spec = registry.get(run.workflow_id)
            for _ in range(20):
                if run.status.is_terminal:
                    break
                if run.status is RunStatus.WAITING and run.waiting is not None and \
                        WaitReason(run.waiting.reason) not in (WaitReason.UNTIL, WaitReason.SUBWORKFLOW):
                    run = rt.resume(workflow=spec, run_id=run_id, wait_key=run.waiting.wait_key,
                                    payload=_answer(run))
                else:
                    run = rt.tick(workflow=spec, run_id=run_id)
            if not run.status.is_terminal:
                problems.append(f"{run_id}: recovery did not reach an end ({run.status.value})")
    except Exception as exc:
        problems.append(f"recovery raised {type(exc).__name__}: {exc}")
    finally:
        store.close()
    again = sorted(completed_before & set(log.executions()))
    if again:
        problems.append(f"recovery executed completed effects again: {again}")
    problems += [f"after recovery: {p}" for p in checks.store_problems(root)]
    return problems


def state_problems(root: Path, acks: dict[str, Any]) -> list[str]:
    """Every file loads, every run verifies, every acknowledged thing survived."""
    problems = checks.store_problems(root)
    for run_id, acked in acks["runs"].items():
        problems += checks.durable_problems(root, run_id, acked)
    if acks["snapshots"]:
        snapshots = JsonSnapshotStore(root / "snapshots", durability="none")
        for snapshot_id in acks["snapshots"]:
            try:
                if snapshots.load(snapshot_id) is None:
                    problems.append(f"acknowledged snapshot {snapshot_id} lost")
            except Exception as exc:
                problems.append(f"acknowledged snapshot {snapshot_id} unreadable: {type(exc).__name__}: {exc}")
    for run_id, name, seq, digest in acks["bookmarks"]:
        try:
            mark = read_bookmarks(root / "runs" / run_id / "bookmarks.json").get(name)
        except Exception as exc:
            problems.append(f"bookmarks of {run_id} unreadable: {type(exc).__name__}: {exc}")
            continue
        if mark is None or (mark.seq, mark.record_hash) != (seq, digest):
            problems.append(f"acknowledged bookmark {run_id}/{name} lost")
    return problems


def check_all(initial: Path, ops: list[tuple[Any, ...]], work: Path, *, samples: int = 1, seed: int = 0,
              modes: tuple[str, ...] = ("durable", "volatile"), recover: bool = True,
              stop_after: Optional[int] = None) -> CrashReport:
    """Check the crash states after every mutating operation of ``ops`` (recorded from ``initial``).

    ``initial`` is a copy of the store root as it was when recording started.
    """
    report = CrashReport(operations=len(ops))
    model = Model(initial)
    rng = random.Random(seed)
    recovered: dict[str, list[str]] = {}
    points = set(crash_points(ops))
    applied = 0
    for k in sorted(points):
        while applied < k:
            model.apply(_rebase(ops[applied], initial))
            applied += 1
        report.crash_points += 1
        acks = _acks(ops, k)
        for mode in list(modes) + ["random"] * samples:
            target = work / "state"
            shutil.rmtree(target, ignore_errors=True)
            digest = model.materialize(target / "store", mode, rng)
            report.states += 1
            problems = state_problems(target / "store", acks)
            if recover and not problems:
                if digest not in recovered:
                    recovered[digest] = recovery_problems(target / "store", target)
                problems = recovered[digest]
            if problems:
                report.lost += sum("lost" in p or "behind" in p for p in problems)
                report.violations.extend(f"crash after op {k} ({_describe(ops, k)}), {mode} state: {p}"
                                         for p in problems)
                if stop_after is not None and len(report.violations) >= stop_after:
                    report.distinct_states = len(recovered)
                    return report
    report.distinct_states = len(recovered)
    return report


_REBASE: dict[str, str] = {}


def _rebase(op: tuple[Any, ...], initial: Path) -> tuple[Any, ...]:
    """Ops were recorded on the live root; the model is built from its copy ``initial``."""
    live = _REBASE.get("live")
    if live is None:
        return op
    def fix(p: object) -> object:
        return os.fspath(initial) + p[len(live):] if isinstance(p, str) and p.startswith(live) else p
    return tuple(fix(x) for x in op)


def simulate(work: Path, *, samples: int = 1, seed: int = 0, drop_fsync_in: frozenset[tuple[str, ...]] = frozenset(),
             fresh_root: bool = False, stop_after: Optional[int] = None, recover: bool = True,
             modes: tuple[str, ...] = ("durable", "volatile")) -> CrashReport:
    """Record the workload and check every crash state; see the module docstring."""
    shutil.rmtree(work, ignore_errors=True)
    live, initial = work / "live", work / "initial"
    live.mkdir(parents=True)
    if not fresh_root:
        prepare_root(live)
    shutil.copytree(live, initial)
    (work / "side").mkdir()
    ops = record(live, work / "side", drop_fsync_in=drop_fsync_in)
    _REBASE["live"] = os.fspath(live)
    try:
        return check_all(initial, ops, work, samples=samples, seed=seed, recover=recover, stop_after=stop_after,
                         modes=modes)
    finally:
        _REBASE.pop("live", None)


def _describe(ops: list[tuple[Any, ...]], k: int) -> str:
    if k == 0:
        return "nothing done"
    op = ops[k - 1]
    text = " ".join(os.path.basename(x) if isinstance(x, str) else str(x) for x in op[:3] if not isinstance(x, bytes))
    return text
