"""Verifying one long ledger on several cores: byte ranges split at anchors, stitched by the parent.

Each line's parse, canonical check and SHA-256, and the record checks of
:class:`~abstractruntime.storage.ledger_scan.LedgerScan`, depend on that line alone; only the
chain link (``seq``, ``prev_hash``) and the state replay run from one record to the next. The
ledger's byte range is therefore cut where ``anchors.jsonl`` keeps a checkpoint — the byte
offset just past a record, its ``seq`` and ``record_hash``, and the state right after it — and
each range is scanned by its own process:

- the range's first record must link to the anchor's ``seq`` and hash, and the parent checks
  that the range before it ended at exactly that record (so the links join into one chain);
- the range's replay starts from the anchor's state, after filing the stored values the lines
  before the range define; the parent checks that the state digest the range before it
  rebuilt at that record is the digest of the anchor's state (so, the anchor being the state
  the ledger rebuilds there, each range replays what one sequential replay would);
- what crosses ranges in order (the signature trail, the rolled-back checkpoint witness, the
  segment structure) is collected by the workers and replayed by the parent.

Nothing of the anchors is believed: an anchor that does not fit makes the stitching fail. The
parallel pass only ever concludes "clean"; any problem or note in any range, an anchor that
does not fit, a segment out of shape, or a record of an older format makes it give up, and the
caller verifies the run in one process, which then names what is wrong exactly as it always
has. A worker that dies raises :class:`~abstractruntime.core.errors.StorageError`.

Workers (:mod:`.verify_pool`) are started only for ledgers of at least :data:`PARALLEL_MIN_BYTES`.
Only the standard library is used.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from ..core.records import JCS_FORMATS
from ..core.state import StateImage
from ..core.wal import record_parts
from .fsio import loads_strict
from .ledger_scan import LedgerScan, int_or_none
from .record_rules import SignatureTrail
from .run_files import ANCHORS_FILE
from .segments import SEGMENT_KIND, Parts
from .verify_pool import context, start_worker, worker_died
from .verify_report import VerifyReport

# Ledgers smaller than this are verified in one process: starting workers costs more than it saves.
PARALLEL_MIN_BYTES = 4 << 20
_BLOCK = 4 << 20  # bytes read at a time
_DEFINES = re.compile(rb'"\$(?:val|ext)"')  # a line that may define a stored value


@dataclass
class _Anchor:
    seq: int
    head_hash: str
    offset: int
    state: dict[str, Any]


def _anchors(run_dir: Path, ledger_bytes: int) -> list[_Anchor]:
    """The well-formed anchors of the run, by offset (none when the file is missing, unreadable, or
    larger than ``ledger_bytes`` and 64 MiB together: a cache that size was put there to exhaust memory)."""
    found: dict[int, _Anchor] = {}
    try:
        # Not followed if a symlink, not waited on if a FIFO: anything but a regular file is no cache.
        fd = os.open(run_dir / ANCHORS_FILE, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return []
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > ledger_bytes + (64 << 20):
        os.close(fd)
        return []
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read()
        except OSError:
            return []
    for raw in data.split(b"\n"):
        try:
            doc = loads_strict(raw)
        except (ValueError, RecursionError, UnicodeDecodeError):
            continue
        if not isinstance(doc, dict):
            continue
        checkpoint, seq, offset = doc.get("checkpoint"), int_or_none(doc.get("seq")), int_or_none(doc.get("offset"))
        state = checkpoint.get("state") if isinstance(checkpoint, dict) else None
        head = doc.get("head_hash")
        if seq and offset and isinstance(head, str) and isinstance(state, dict) \
                and isinstance(state.get("run"), dict) and isinstance(state.get("kernel"), dict):
            found[offset] = _Anchor(seq, head, offset, state)
    return [found[k] for k in sorted(found)]


# The first range is scanned by this process, which starts at once; each other range waits for a
# worker to start and sends its outcome back: the first range is this much larger than the others
# (measured on 2 CPUs, 50,000 records: 0.08 took 324 ms, even ranges 342 ms, 0.15 332 ms).
FIRST_RANGE_EXTRA = 0.08


def _cuts(anchors: list[_Anchor], size: int, ranges: int) -> list[_Anchor]:
    """The anchors nearest to cutting ``size`` bytes into ``ranges`` ranges (in order, distinct):
    equal ranges, but for the first, :data:`FIRST_RANGE_EXTRA` larger."""
    chosen: list[_Anchor] = []
    total = ranges + FIRST_RANGE_EXTRA
    for k in range(1, ranges):
        target = int(size * (k + FIRST_RANGE_EXTRA) / total)
        best = min((a for a in anchors if 0 < a.offset < size and (not chosen or a.offset > chosen[-1].offset)),
                   key=lambda a: abs(a.offset - target), default=None)
        if best is not None:
            chosen.append(best)
    return chosen


@dataclass
class _Task:
    """One range for one process: ``[start, end)`` of the ledger, after the record ``prev``."""

    run_id: str
    files: list[tuple[str, int, int, bool]]  # (path, start, size, sealed), every file of the ledger
    start: int
    end: int
    prev: tuple[int, Optional[str]]
    state: Optional[dict[str, Any]]
    want_seqs: set[int]
    want_hashes: set[str]
    committed_seq: Optional[int]


@dataclass
class _FileSeen:
    """What one range saw of one file: its records, the segment records among them, its last record."""

    count: int = 0
    segments: list[tuple[Optional[int], Any, bool]] = field(default_factory=list)  # (seq, result, last)
    last_hash: Optional[str] = None
    reaches_end: bool = False


@dataclass
class _Outcome:
    """What a range found (``clean`` False: verify the run in one process instead)."""

    clean: bool
    count: int = 0
    lines: int = 0
    head: tuple[int, Optional[str]] = (0, None)
    start_digest: Optional[str] = None
    end_digest: Optional[str] = None
    at_seq: dict[int, tuple[Optional[str], int]] = field(default_factory=dict)
    state_at: dict[int, Optional[str]] = field(default_factory=dict)
    hash_at: dict[str, tuple[Optional[int], int]] = field(default_factory=dict)
    only_starts: bool = True
    replayable: bool = False
    workflow: Any = None
    workflow_set: bool = False
    workflow_in_chain: bool = False
    trail: list[tuple[Any, ...]] = field(default_factory=list)
    witness: list[tuple[dict[str, Any], int, int]] = field(default_factory=list)
    files: dict[int, _FileSeen] = field(default_factory=dict)


class _TrailLog(SignatureTrail):
    """Records what the signature trail must see, in order, for the parent to replay: the records
    that start, sign or change signing, and runs of other records as counts."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[Any, ...]] = []

    def see(self, doc: dict[str, Any], seq: Optional[int]) -> None:
        """Log ``doc`` (or count it, when it plays no part in signing)."""
        if doc.get("kind") in ("start", "signing") or "signature" in doc:
            self.log.append(("doc", doc, seq))
        elif self.log and self.log[-1][0] == "gap":
            self.log[-1] = ("gap", self.log[-1][1], self.log[-1][2] + 1)
        else:
            self.log.append(("gap", seq, 1))


class _RangeScan(LedgerScan):
    """A :class:`LedgerScan` of one range, which logs what only the whole chain can judge."""

    def __init__(self, task: _Task) -> None:
        super().__init__(VerifyReport(run_id=task.run_id, path=""), want_seqs=task.want_seqs,
                         want_hashes=task.want_hashes, committed_seq=task.committed_seq)
        self.task = task
        self.signatures = _TrailLog()
        self.witness_log: list[tuple[dict[str, Any], int, int]] = []
        self._prev_seq, self._prev_hash = task.prev

    def _track_commit_witness(self, doc: dict[str, Any], seq: Optional[int], line_no: int) -> None:
        if self.committed_seq is not None and seq is not None and seq > self.committed_seq \
                and isinstance(doc.get("step_id"), str):
            self.witness_log.append((doc, seq, line_no))



def _blocks(path: str, start: int, end: int) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of a ledger file (never through a symlink), a block at a time."""
    with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as handle:
        handle.seek(start)
        left = end - start
        while left > 0:
            data = handle.read(min(_BLOCK, left))
            if not data:
                return
            left -= len(data)
            yield data


def _seed(scan: _RangeScan, task: _Task) -> Optional[str]:
    """Start the replay at the anchor: its state, and the stored values the lines before it define."""
    if task.state is None:
        return None
    replay = scan.replay
    replay.image = StateImage(task.state)
    for path, file_start, size, _sealed in task.files:
        if file_start >= task.start:
            break
        carry = b""
        for data in _blocks(path, 0, min(size, task.start - file_start)):
            data = carry + data
            cut = data.rfind(b"\n") + 1
            carry, data = data[cut:], data[:cut]
            filed_to = -1
            for match in _DEFINES.finditer(data):
                if match.start() < filed_to:
                    continue  # on a line filed already
                begin = data.rfind(b"\n", 0, match.start()) + 1
                filed_to = data.find(b"\n", match.end())
                _file_definitions(replay.table, data[begin:filed_to])
    return replay.image.digest()


def _file_definitions(table: Any, line: bytes) -> None:
    """File the stored values ``line`` defines (a damaged line is skipped: the range holding it reports it)."""
    try:
        doc = loads_strict(line)
        seq = doc.get("seq") if isinstance(doc, dict) else None
        if isinstance(seq, int) and doc.get("format") in JCS_FORMATS:
            for part in record_parts(doc):
                table.collect(part, seq)
    except (ValueError, RecursionError, UnicodeDecodeError, TypeError, AttributeError):
        pass


def scan_range(task: _Task) -> _Outcome:
    """Scan one range (run in a worker process, or by the parent for the first range)."""
    try:
        return _scan_range(task)
    except OSError:
        return _Outcome(clean=False)  # a file gone or unreadable meanwhile: the careful pass reports it
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return _Outcome(clean=False)  # an anchor's state that is no state (edited): it is not believed


def _scan_range(task: _Task) -> _Outcome:
    scan = _RangeScan(task)
    start_digest = _seed(scan, task)
    report = scan.report
    files: dict[int, _FileSeen] = {}
    line_no = 0
    for index, (path, file_start, size, _sealed) in enumerate(task.files):
        lo, hi = max(task.start, file_start), min(task.end, file_start + size)
        if lo >= hi:
            continue
        seen = files[index] = _FileSeen(reaches_end=hi == file_start + size)
        carry = b""
        for data in _blocks(path, lo - file_start, hi - file_start):
            pieces = (carry + data).split(b"\n")
            carry = pieces.pop()
            for body in pieces:
                line_no += 1
                scan._body(line_no, body)
                doc = scan._last_doc
                if report.count != line_no or doc is None or doc.get("format") not in JCS_FORMATS:
                    # Not a record, or one of an older format (whose replay starts over): the careful pass decides.
                    return _Outcome(clean=False)
                seen.count += 1
                seen.last_hash = doc.get("record_hash")
                if doc.get("kind") == SEGMENT_KIND:
                    seen.segments.append((int_or_none(doc.get("seq")), doc.get("result"), False))
            if report.problems or report.notes or report.problems_omitted:
                return _Outcome(clean=False)
        if carry:
            return _Outcome(clean=False)  # a line cut by the end of its file (torn, or a cut anchor)
        if seen.segments and seen.reaches_end and seen.segments[-1][0] == report.head_seq:
            last = seen.segments[-1]
            seen.segments[-1] = (last[0], last[1], True)
    if report.problems or report.notes or report.problems_omitted or report.count == 0:
        return _Outcome(clean=False)
    return _Outcome(clean=True, count=report.count, lines=line_no, head=(report.head_seq, report.head_hash),
                    start_digest=start_digest, end_digest=scan.replay.digests.get(report.head_seq),
                    at_seq=scan.at_seq, state_at=scan.state_at, hash_at=scan.hash_at,
                    only_starts=scan.only_starts, replayable=scan.replayable, workflow=scan.workflow,
                    workflow_set=scan.workflow_set, workflow_in_chain=scan.workflow_in_chain,
                    trail=scan.signatures.log if isinstance(scan.signatures, _TrailLog) else [],
                    witness=scan.witness_log, files=files)


def _segments_in_shape(parts: Parts) -> bool:
    return not parts.strays and all(part.number == index for index, part in enumerate(parts.sealed, start=1))


def scan_parallel(scan: LedgerScan, parts: Parts, run_dir: Path, *, jobs: int,
                  min_bytes: Optional[int] = None) -> bool:
    """Scan the run's ledger in ``jobs`` processes and fill ``scan`` and its report, when the
    ledger is at least ``min_bytes`` (default :data:`PARALLEL_MIN_BYTES`) long and its anchors
    allow a cut; ``False`` (``scan`` untouched) when the caller must scan it in one process —
    too small, no anchor to cut at, or anything at all found (see the module docstring)."""
    threshold = PARALLEL_MIN_BYTES if min_bytes is None else min_bytes
    size = parts.size
    if jobs < 2 or size < max(threshold, 1) or not parts.exists or not _segments_in_shape(parts):
        return False
    cuts = _cuts(_anchors(run_dir, size), size, jobs)
    if not cuts:
        return False
    files = [(str(p.path), p.start, p.size, p.number is not None) for p in parts.all]
    bounds = [0] + [a.offset for a in cuts] + [size]
    common = dict(run_id=scan.report.run_id, files=files, want_seqs=scan.want_seqs,
                  want_hashes=scan.want_hashes, committed_seq=scan.committed_seq)
    tasks = [_Task(start=bounds[0], end=bounds[1], prev=(0, None), state=None, **common)]  # type: ignore[arg-type]
    tasks += [_Task(start=bounds[i + 1], end=bounds[i + 2], prev=(a.seq, a.head_hash), state=a.state,
                    **common) for i, a in enumerate(cuts)]  # type: ignore[arg-type]
    outcomes = _run(tasks)
    if outcomes is None:
        return False
    return _stitch(scan, parts, cuts, outcomes)


def _run(tasks: list[_Task]) -> Optional[list[_Outcome]]:
    """The outcomes of ``tasks``: the first in this process, the others in workers."""
    from concurrent.futures import Future, ProcessPoolExecutor  # only when workers start (start-up time)
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(max_workers=len(tasks) - 1, mp_context=context(), initializer=start_worker,
                                 initargs=(os.getpid(),)) as pool:
            futures: list[Future[_Outcome]] = [pool.submit(scan_range, task) for task in tasks[1:]]
            first = scan_range(tasks[0])
            if not first.clean:
                for future in futures:
                    future.cancel()
                return None
            return [first] + [future.result() for future in futures]
    except BrokenProcessPool as exc:
        raise worker_died() from exc


def _stitch(scan: LedgerScan, parts: Parts, cuts: list[Any], outcomes: list[_Outcome]) -> bool:
    """Join the ranges into one chain and fill ``scan``; ``False`` when they do not join cleanly."""
    if not all(o.clean for o in outcomes):
        return False
    for before, after, anchor in zip(outcomes, outcomes[1:], cuts):
        if before.head != (anchor.seq, anchor.head_hash) or before.end_digest is None \
                or before.end_digest != after.start_digest:
            return False  # the anchor is not the record, or not the state, the range before it ends at
    # The segments: each sealed file closed by its own segment record, nothing else anywhere.
    counts: dict[int, int] = {}
    last_hash: dict[int, Optional[str]] = {}
    closing: dict[int, list[tuple[Optional[int], Any, bool]]] = {}
    for outcome in outcomes:
        for index, seen in outcome.files.items():
            counts[index] = counts.get(index, 0) + seen.count
            closing.setdefault(index, []).extend(seen.segments)
            if seen.reaches_end:
                last_hash[index] = seen.last_hash
    before_hash: Optional[str] = None
    for index, part in enumerate(parts.all):
        found = closing.get(index, [])
        if part.number is None:
            if found:
                return False  # a segment record in the live file (pending or misplaced): said in one pass
            continue
        if len(found) != 1 or not found[0][2] or not isinstance(found[0][1], dict):
            return False
        result = found[0][1]
        if (result.get("segment"), result.get("count"), result.get("head_hash")) != (
                part.number, counts.get(index, 0), before_hash):
            return False
        before_hash = last_hash.get(index)
    report = scan.report
    scan.exists = True
    line_base = 0
    for outcome in outcomes:
        report.count += outcome.count
        for seq, (record_hash, line) in outcome.at_seq.items():
            scan.at_seq.setdefault(seq, (record_hash, line + line_base))
        for seq, digest in outcome.state_at.items():
            scan.state_at.setdefault(seq, digest)
        for record_hash, (found_seq, line) in outcome.hash_at.items():
            scan.hash_at.setdefault(record_hash, (found_seq, line + line_base))
        scan.only_starts = scan.only_starts and outcome.only_starts
        scan.replayable = scan.replayable or outcome.replayable
        if outcome.workflow_set:
            scan.workflow = outcome.workflow
        scan.workflow_in_chain = scan.workflow_in_chain or outcome.workflow_in_chain
        trail = scan.signatures
        for entry in outcome.trail:
            if entry[0] == "doc":
                trail.see(entry[1], entry[2])
            else:
                trail.modern = True
                if trail.last is not None:
                    trail.after_last += entry[2]
                    if trail.first_unsigned_after is None:
                        trail.first_unsigned_after = entry[1]
        for doc, seq, line in outcome.witness:
            scan._track_commit_witness(doc, seq, line + line_base)
        line_base += outcome.lines
    report.lines = line_base
    report.head_seq, report.head_hash = outcomes[-1].head
    return True


__all__ = ["PARALLEL_MIN_BYTES", "scan_parallel", "scan_range"]
