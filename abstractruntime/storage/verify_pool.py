"""Worker processes for ``verify``: how many, how they start, how they end, and ``verify --all``'s.

Workers are forked when the platform forks and this process runs no other thread (a child forked
while another thread holds a lock could wait for it forever), else started as fresh interpreters.
Each worker ends itself when its parent is gone, and a worker that dies makes the caller raise
:class:`~abstractruntime.core.errors.StorageError` (:func:`worker_died`) instead of waiting.
:class:`RunsAhead` verifies a store's runs side by side for
:func:`~abstractruntime.storage.verify.verify_store`. Only the standard library is used.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ..core.errors import StorageError
from .run_files import LEDGER_FILE, RUNS_DIR
from .segments import SEGMENTS_DIR

# verify --all verifies runs in worker processes only when the ledgers it leaves to them add up to
# this much: below it, starting workers costs more than it saves.
PARALLEL_STORE_MIN_BYTES = 1 << 20
# Runs verified by one worker task: each task costs a round trip, each run a millisecond or so.
_BATCH_RUNS = 16


def default_jobs() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# multiprocessing and concurrent.futures are imported when workers are started, never before:
# they would be a good part of the start-up time of every command that can verify.


def can_fork() -> bool:
    """Whether workers may be forked: the platform forks and this process runs no other thread (a
    child forked while another thread holds a lock could wait for it forever)."""
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def context() -> Any:
    """Fork when it is safe (no re-import: a worker starts in milliseconds), else a fresh interpreter."""
    import multiprocessing

    if can_fork():
        return multiprocessing.get_context("fork")
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def start_worker(parent: int) -> None:
    """In each worker: end it when the process that made its pool (``parent``, its pid passed
    from there) is gone: nothing would ever read its result, and a forked worker waiting for work
    would wait forever. Asked by pid, not as "my parent": a forkserver's workers are the server's
    children, and a worker that starts after its maker was killed already has a new parent."""
    first = os.getppid()

    def watch() -> None:
        while os.getppid() == first and _exists(parent):
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="verify-parent-watch", daemon=True).start()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process of that number: not ours to judge
    return True


def worker_died() -> StorageError:
    """The error for a worker that died before it answered."""
    return StorageError("A verify worker process died before it finished (killed, or out of memory); "
                        "run verify again, or with --jobs 1 to use one process")


# What the worker processes of verify_store read (set before they are forked, so never pickled:
# a keyring may hold key objects that do not pickle).
_SHARED: dict[str, Any] = {}
_FORK_LOCK = threading.Lock()


def verify_batch(run_ids: list[str]) -> list[Any]:
    """Verify ``run_ids`` in a worker process, one process each (no nested workers)."""
    shared = _SHARED
    return [shared["verify"](shared["root"], run_id, expect_head=shared["mapping"].get(run_id),
                             keyring=shared["keyring"], search=shared["search"]) for run_id in run_ids]


class RunsAhead:
    """The reports of a store's runs, verified ahead in worker processes when there are several runs
    and CPUs (forked workers only: where the process cannot fork safely, or with one CPU, each run is
    verified when asked for). A run whose ledger is ``long_bytes`` or more is left to the parent,
    which checks it on every core itself. ``verify(root, run_id, *, expect_head, keyring, search,
    jobs=1)`` verifies one run."""

    def __init__(self, root: Path, run_ids: list[str], verify: Callable[..., Any], *, mapping: dict[str, str],
                 keyring: Optional[dict[str, Any]], search: Optional[str], jobs: int, long_bytes: int) -> None:
        self.root, self.verify, self.mapping, self.keyring, self.search = root, verify, mapping, keyring, search
        self.jobs = jobs
        self.pool: Any = None
        self.pending: dict[str, Any] = {}
        if jobs < 2 or len(run_ids) < 2 or not can_fork():
            return
        sizes = {r: _ledger_bytes(root, r, long_bytes) for r in run_ids}
        small = [r for r in run_ids if sizes[r] < long_bytes]
        if len(small) < 2 or sum(sizes[r] for r in small) < PARALLEL_STORE_MIN_BYTES:
            return  # starting workers would cost more than it saves
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with _FORK_LOCK:  # forked workers start at the first submit, with _SHARED as it is then
            _SHARED.update(verify=verify, root=root, mapping=mapping, keyring=keyring, search=search)
            self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork"),
                                            initializer=start_worker, initargs=(os.getpid(),))
            for start in range(0, len(small), _BATCH_RUNS):
                batch = small[start:start + _BATCH_RUNS]
                future = self.pool.submit(verify_batch, batch)
                for index, run_id in enumerate(batch):
                    self.pending[run_id] = (future, index)

    def report(self, run_id: str) -> Any:
        """The report of ``run_id`` (from a worker, or verified now)."""
        entry = self.pending.pop(run_id, None)
        if entry is None:
            return self.verify(self.root, run_id, expect_head=self.mapping.get(run_id), keyring=self.keyring,
                               search=self.search, jobs=self.jobs)
        from concurrent.futures.process import BrokenProcessPool

        try:
            return entry[0].result()[entry[1]]
        except BrokenProcessPool as exc:
            self.close()
            raise worker_died() from exc

    def close(self) -> None:
        """Stop the workers (those still running finish their batch first)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _ledger_bytes(root: Path, run_id: str, long_bytes: int) -> int:
    """The size of the run's live ledger file; a run with sealed segments counts as long."""
    run_dir = root / RUNS_DIR / run_id
    if os.path.isdir(run_dir / SEGMENTS_DIR):
        return long_bytes
    try:
        return os.lstat(run_dir / LEDGER_FILE).st_size
    except OSError:
        return 0


__all__ = ["PARALLEL_STORE_MIN_BYTES", "RunsAhead", "can_fork", "context", "default_jobs", "start_worker",
           "verify_batch", "worker_died"]
