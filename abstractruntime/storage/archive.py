"""Archives: runs of a store in one self-verifying ``.tar.gz`` file, checked offline, restored anywhere.

    export_archive(store, "2026.tar.gz", finished_before=parse_age("30d"))
    verify_archive("2026.tar.gz")             # offline: no store, no workflow code
    import_archive("2026.tar.gz", other)       # a folder store or a PostgreSQL store

An archive is a folder store's layout (``runs/<id>/ledger.jsonl`` with the exact lines,
``run.json``, ``bookmarks.json``, ``secrets.jsonl`` only when asked, ``snapshots/``,
``artifacts/``, ``events/``) in a tar file compressed with gzip (the standard library's
``tarfile``), led by ``manifest.json``: the archive format, when it was made, each run's
head (seq, hash), record count and final status, and the size and SHA-256 of every other
member. Runs move in and out by the one transfer path of ``store copy``
(:func:`~abstractruntime.storage.postgres.copy.transfer_store`): each is read at one moment,
verified, and written whole — into a staging folder on export, from the unpacked archive on
import — so every ledger keeps its bytes and every head its hash.

:func:`verify_archive` checks, without any store: that every member is a plain file under a
safe relative name, listed once in the manifest with its size and SHA-256, and that nothing
listed is missing; then every run with the offline verifier (chain, checkpoint, bookmarks,
signatures with ``public_key``), and that each run ends at the head the manifest names. An
archive is unpacked by this module itself (never ``extractall``): a link, a device, an
absolute name or ``..`` is refused, not followed. :func:`import_archive` imports only an
archive that verifies.

The manifest is not signed: someone able to rewrite an archive can rewrite its manifest to
match. What an archive proves is what its ledgers prove — the chains, a signed head checked
with ``public_key``, a head published elsewhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from dataclasses import field
from ..core.fastclass import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..core.canonical import canonical_json, is_sha256_hex
from ..core.errors import InvalidInputError, NotFoundError, StorageError, VerificationFailedError
from ..core.ids import validate_id
from .fsio import FILE_MODE, loads_strict
from .run_files import RUNS_DIR, SECRETS_FILE
from .verify_report import VerifyReport

ARCHIVE_FORMAT = 1
ARCHIVE_KIND = "abstractruntime-archive"
MANIFEST = "manifest.json"
# The report about the archive as a whole (not a valid run id: it names no run).
ARCHIVE_REPORT = "(archive)"
# The top-level entries a folder store's layout may have in an archive.
_TOP = {RUNS_DIR, "snapshots", "artifacts", "events"}
# Members of a store that an archive leaves out: caches, locks, temporary files.
_LEFT_OUT = re.compile(r"(^|/)(\.lock|\.[^/]*\.tmp|index\.sqlite3.*)$")
_CHUNK = 1 << 20
# What the members after the manifest may declare beyond the sizes it lists (a stray small
# member is then named for what it is; a bomb in one is refused before it is decompressed).
_SKIP_SLACK = 1 << 20
# A manifest larger than this is refused before it is read (a million runs list well under it).
MAX_MANIFEST_BYTES = 256 << 20


@dataclass
class ArchiveReport:
    """What :func:`export_archive` or :func:`import_archive` did."""

    path: str
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    copied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    files: int = 0
    snapshots: int = 0
    artifacts: int = 0
    secrets: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the CLI's ``--json``)."""
        return {"path": self.path, "runs": self.runs, "count": len(self.runs), "copied": self.copied,
                "already": self.already, "files": self.files, "snapshots": self.snapshots,
                "artifacts": self.artifacts, "secrets": self.secrets}


def _sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@contextlib.contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        folder = Path(tmp) / "store"
        folder.mkdir(mode=0o700)
        yield folder


def select_runs(store: Any, *, runs: Optional[list[str]] = None,
                finished_before: Optional[datetime | timedelta] = None,
                now: Optional[Callable[[], datetime]] = None) -> list[str]:
    """The runs an export takes: ``runs`` as named, else the runs that finished before
    ``finished_before`` (a moment or an age), else every run of the store."""
    from .postgres.copy import run_ids
    from .prune import finished_runs

    if runs:
        return sorted({validate_id(r, "run id") for r in runs})
    if finished_before is not None:
        return sorted(finished_runs(store, finished_before, now=now))
    return run_ids(store)


def export_archive(store: Any, path: str | os.PathLike[str], *, runs: Optional[list[str]] = None,
                   finished_before: Optional[datetime | timedelta] = None, secrets: bool = False,
                   now: Optional[Callable[[], datetime]] = None) -> ArchiveReport:
    """Write the runs of ``store`` (see :func:`select_runs`) with their snapshots, bookmarks,
    artifacts and event ids into one archive at ``path`` (replaced atomically); the kept
    secret values only with ``secrets``. Each run is verified first; one that does not verify
    is :class:`VerificationFailedError` and no archive is written."""
    from .postgres.copy import transfer_store
    from .store import FileStore

    wanted = select_runs(store, runs=runs, finished_before=finished_before, now=now)
    if not wanted:
        raise NotFoundError("no runs to export", store=str(getattr(store, "root", "")) or store.describe())
    target = Path(path)
    clock = now or (lambda: datetime.now(timezone.utc))
    with _scratch("abstractruntime-export-") as folder:
        staging = FileStore(folder, durability="none")
        try:
            copied = transfer_store(store, staging, runs=wanted, unattached=False)
            manifest_runs = {r: _run_entry(staging, r) for r in wanted}
        finally:
            staging.close()
        files = _layout_files(folder, secrets=secrets)
        manifest = {"format": ARCHIVE_FORMAT, "kind": ARCHIVE_KIND,
                    "created_at": clock().astimezone(timezone.utc).isoformat(), "secrets": secrets,
                    "runs": manifest_runs,
                    "files": {name: {"size": size, "sha256": digest} for name, (digest, size, _) in files.items()}}
        data = _tar_bytes_path(target)
        try:
            _write_tar(data, manifest, files)
            _durable_rename(data, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                data.unlink()
    return ArchiveReport(path=str(target), runs=manifest_runs, copied=copied.copied, files=len(files),
                         snapshots=copied.snapshots, artifacts=copied.artifacts, secrets=secrets)


def _run_entry(staging: Any, run_id: str) -> dict[str, Any]:
    head = staging.ledger.head(run_id)
    checkpoint = staging.runs.load_checkpoint(run_id)
    run = checkpoint.shown_run() if checkpoint is not None else None
    return {"head_seq": head.seq, "head_hash": head.head_hash, "count": head.seq,
            "status": run.status.value if run else None, "workflow_id": run.workflow_id if run else None}


def _layout_files(folder: Path, *, secrets: bool) -> dict[str, tuple[str, int, Path]]:
    """``{archive name: (sha256, size, path)}`` of the staged store's files, in name order."""
    found: dict[str, tuple[str, int, Path]] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        name = path.relative_to(folder).as_posix()
        if name.split("/", 1)[0] not in _TOP or _LEFT_OUT.search(name):
            continue
        if not secrets and path.name == SECRETS_FILE:
            continue
        digest, size = _sha256_file(path)
        found[name] = (digest, size, path)
    return found


def _tar_bytes_path(target: Path) -> Path:
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise NotFoundError(f"no directory {directory} to write {target.name} in", path=str(directory))
    return directory / f".{target.name}.{os.getpid()}.tmp"


def _write_tar(data: Path, manifest: dict[str, Any], files: dict[str, tuple[str, int, Path]]) -> None:
    fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST, canonical_json(manifest) + b"\n", manifest["created_at"])
        for name, (_, size, path) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = size, 0o600, int(_epoch(manifest["created_at"]))
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
        raw.flush()
        os.fsync(raw.fileno())


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _add(tar: tarfile.TarFile, name: str, data: bytes, created_at: str) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(_epoch(created_at))
    tar.addfile(info, io.BytesIO(data))


def _durable_rename(data: Path, target: Path) -> None:
    from .fsio import fsync_dir

    try:
        os.replace(data, target)
    except OSError as exc:
        raise StorageError(f"Cannot write {target}: {exc.strerror or exc}") from exc
    fsync_dir(target.parent if str(target.parent) else Path("."))


# -- reading and verifying -------------------------------------------------------------------


@dataclass
class ArchiveCheck:
    """What :func:`verify_archive` found: a report per run (and ``"(archive)"`` for the
    archive's own problems), and the manifest when it could be read."""

    reports: list[VerifyReport] = field(default_factory=list)
    manifest: Optional[dict[str, Any]] = None

    @property
    def ok(self) -> bool:
        """True when the archive and every run in it verify."""
        return bool(self.reports) and all(r.ok for r in self.reports)


def _safe_name(name: str) -> Optional[str]:
    """The member name when it is a plain relative path inside the archive, else ``None``."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return None
    norm = posixpath.normpath(name)
    if norm != name.rstrip("/") or norm.startswith("..") or "/../" in f"/{norm}/":
        return None
    return norm


def _unpack(path: Path, folder: Path, problems: VerifyReport,
            max_bytes: Optional[int] = None) -> tuple[Optional[dict[str, Any]], set[str]]:
    """Unpack the archive's regular files into ``folder`` (this module writes each one) and
    return the manifest (``None`` when it is missing or unreadable: reported) and the names
    of listed members that were refused unwritten (reported here, not again as missing).

    The manifest is the first member (as :func:`export_archive` writes it): nothing reaches
    the disk before it, and then only members it lists, with the size it names — so an
    archive unpacks to at most the manifest's total, which must fit in ``max_bytes`` and in
    the free space of the folder. A crafted archive (a gzip bomb, a member swollen past its
    listed size) is refused before it fills the temporary directory, and before it is
    decompressed: the members after the manifest may declare no more bytes than it lists.
    """
    manifest: Optional[dict[str, Any]] = None
    listed: dict[str, Any] = {}
    budget = 0
    seen: set[str] = set()
    refused: set[str] = set()
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                # Every member's data is decompressed to be read or skipped: nothing but the manifest
                # may come before it, and the members after it may together declare little more than
                # it lists (a gzip bomb in a member refused, unlisted or repeated would cost its size in CPU).
                if manifest is None:
                    if member.name != MANIFEST and not member.isdir():
                        break  # reported below: an archive starts with its manifest
                else:
                    budget -= member.size
                    if budget < 0:
                        problems.problem("archive_too_large", f"member {member.name!r} declares {member.size} bytes, "
                                         "more than the manifest lists for the members left: not read further")
                        return None, refused
                name = _safe_name(member.name)
                if name is None:
                    problems.problem("archive_member_refused", f"member {member.name!r} has an unsafe name")
                    continue
                if member.isdir():
                    continue
                if not member.isreg():
                    problems.problem("archive_member_refused", f"member {name} is not a plain file (a link or a "
                                     "device): refused, not followed")
                    continue
                if name in seen:
                    problems.problem("archive_member_duplicate", f"member {name} appears twice")
                    continue
                seen.add(name)
                if manifest is None:  # the manifest itself: nothing but folders came before it
                    if member.size > MAX_MANIFEST_BYTES:
                        problems.problem("archive_too_large", f"{MANIFEST} is {member.size} bytes, over the "
                                         f"{MAX_MANIFEST_BYTES} a manifest may have")
                        return None, refused
                    source = tar.extractfile(member)
                    manifest = _manifest(source.read() if source is not None else b"", problems)
                    total = _fits(manifest, folder, problems, max_bytes) if manifest is not None else None
                    if manifest is None or total is None:
                        return None, refused
                    listed = manifest["files"]
                    budget = total + _SKIP_SLACK
                    continue
                if name.split("/", 1)[0] not in _TOP or name not in listed:
                    problems.problem("archive_file_unlisted", f"member {name} is not in the manifest (added)"
                                     if name.split("/", 1)[0] in _TOP else
                                     f"member {name} is not part of a store's layout")
                    continue
                entry = listed[name]
                if not isinstance(entry, dict) or entry.get("size") != member.size:
                    problems.problem("archive_file_mismatch", f"member {name} is {member.size} bytes, not the "
                                     "size the manifest names (edited): refused unwritten")
                    refused.add(name)
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
    except (tarfile.TarError, OSError, EOFError) as exc:
        problems.problem("archive_unreadable", f"{path}: not a readable .tar.gz archive ({exc})")
        return manifest, refused
    if manifest is None and not problems.problems:
        problems.problem("archive_manifest_missing", f"{path} does not start with {MANIFEST}")
    return manifest, refused


def _fits(manifest: dict[str, Any], folder: Path, problems: VerifyReport, max_bytes: Optional[int]) -> Optional[int]:
    """The bytes the members the manifest lists add up to, when they fit in ``max_bytes`` and in
    the free space; ``None`` (reported) when they do not."""
    sizes = [e.get("size") if isinstance(e, dict) else None for e in manifest["files"].values()]
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sizes):
        problems.problem("archive_manifest_invalid", f"{MANIFEST} lists a member without a size")
        return None
    total: int = sum(sizes)  # type: ignore[arg-type]
    if max_bytes is not None and total > max_bytes:
        problems.problem("archive_too_large", f"the archive unpacks to {total} bytes, over the limit of {max_bytes}")
        return None
    free = shutil.disk_usage(folder).free
    if total > free:
        problems.problem("archive_too_large", f"the archive unpacks to {total} bytes; {folder.parent} has "
                         f"{free} free (set TMPDIR to a larger file system)")
        return None
    return total


def _manifest(data: bytes, problems: VerifyReport) -> Optional[dict[str, Any]]:
    try:
        doc = loads_strict(data)
    except (ValueError, UnicodeDecodeError):
        problems.problem("archive_manifest_invalid", f"{MANIFEST} is not JSON")
        return None
    if not isinstance(doc, dict) or doc.get("kind") != ARCHIVE_KIND or not isinstance(doc.get("files"), dict) \
            or not isinstance(doc.get("runs"), dict):
        problems.problem("archive_manifest_invalid", f"{MANIFEST} is not an abstractruntime archive manifest")
        return None
    if doc.get("format") != ARCHIVE_FORMAT:
        problems.problem("unsupported_format", f"{MANIFEST} has format {doc.get('format')!r}; this release reads "
                         f"format {ARCHIVE_FORMAT} (upgrade abstractruntime)")
        return None
    return doc


def _check_files(folder: Path, manifest: dict[str, Any], problems: VerifyReport, refused: set[str]) -> None:
    listed: dict[str, Any] = manifest["files"]
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    for name in sorted(present - set(listed)):
        problems.problem("archive_file_unlisted", f"member {name} is not in the manifest (added)")
    for name in sorted(set(listed) - present - refused):
        problems.problem("archive_file_missing", f"member {name} of the manifest is not in the archive (removed)")
    for name in sorted(present & set(listed)):
        entry = listed[name]
        digest, size = _sha256_file(folder / name)
        if not isinstance(entry, dict) or not is_sha256_hex(entry.get("sha256")) or \
                (entry.get("sha256"), entry.get("size")) != (digest, size):
            problems.problem("archive_file_mismatch", f"member {name} does not have the size and SHA-256 the "
                             "manifest names (edited)")


def _check_runs(folder: Path, manifest: dict[str, Any], reports: list[VerifyReport], problems: VerifyReport) -> None:
    found = {r.run_id: r for r in reports}
    for run_id, entry in sorted(manifest["runs"].items()):
        report = found.get(run_id)
        if report is None:
            problems.problem("archive_run_missing", f"run {run_id} of the manifest is not in the archive")
            continue
        want = (entry.get("head_seq"), entry.get("head_hash")) if isinstance(entry, dict) else None
        if want != (report.head_seq, report.head_hash):
            report.problem("archive_head_mismatch", f"run {run_id} ends at seq {report.head_seq} "
                           f"{report.head_hash}, not at the head the manifest names ({want})")
    for run_id in sorted(set(found) - set(manifest["runs"])):
        problems.problem("archive_file_unlisted", f"run {run_id} is in the archive but not in the manifest")


def _relabel(reports: list[VerifyReport], folder: Path, path: Path) -> None:
    for report in reports:
        report.path = report.path.replace(str(folder), f"{path}:")
        for finding in [*report.problems, *report.notes]:
            finding.message = finding.message.replace(str(folder), f"{path}:")


@contextlib.contextmanager
def opened_archive(path: str | os.PathLike[str], *, public_key: Any = None, expect_head: Optional[str] = None,
                   max_bytes: Optional[int] = None) -> Iterator[tuple[ArchiveCheck, Path]]:
    """The archive verified and unpacked in a temporary folder store (removed afterwards);
    ``max_bytes`` caps what it may unpack (it must fit in the free space in any case)."""
    from .verify import verify_store

    source = Path(path)
    if not source.is_file():
        raise NotFoundError(f"no archive at {source}", path=str(source))
    with _scratch("abstractruntime-archive-") as folder:
        check = ArchiveCheck()
        problems = VerifyReport(run_id=ARCHIVE_REPORT, path=str(source))
        check.manifest, refused = _unpack(source, folder, problems, max_bytes)
        if check.manifest is not None:
            _check_files(folder, check.manifest, problems, refused)
            if (folder / RUNS_DIR).is_dir():
                check.reports = verify_store(folder, public_key=public_key, expect_head=expect_head)
                _relabel(check.reports, folder, source)
            _check_runs(folder, check.manifest, check.reports, problems)
        if problems.problems or problems.notes or not check.reports:
            if not check.reports and not problems.problems:
                problems.problem("archive_empty", f"{source} holds no run")
            check.reports.append(problems)
        yield check, folder


def verify_archive(path: str | os.PathLike[str], *, public_key: Any = None, expect_head: Optional[str] = None,
                   max_bytes: Optional[int] = None) -> ArchiveCheck:
    """Check an archive offline (see the module docstring); ``public_key`` as for
    :func:`~abstractruntime.storage.verify.verify_run`; ``expect_head``, a head published
    elsewhere, must be in one of its runs (as for ``verify --all``); ``max_bytes`` caps the
    bytes it may unpack (an archive listing more is refused, ``archive_too_large``)."""
    with opened_archive(path, public_key=public_key, expect_head=expect_head, max_bytes=max_bytes) as (check, _):
        return check


def import_archive(path: str | os.PathLike[str], store: Any, *, public_key: Any = None,
                   max_bytes: Optional[int] = None) -> ArchiveReport:
    """Restore an archive into ``store`` (a folder store or a PostgreSQL store) by the transfer
    path of ``store copy``: runs the store holds identically are skipped, a different run under
    an archived id is refused (:class:`~abstractruntime.core.errors.RunExistsError`). An
    archive that does not verify is :class:`VerificationFailedError` and nothing is written."""
    from .postgres.copy import transfer_store
    from .store import FileStore

    with opened_archive(path, public_key=public_key, max_bytes=max_bytes) as (check, folder):
        if not check.ok or check.manifest is None:
            bad = [r for r in check.reports if not r.ok]
            first = bad[0].problems[0] if bad and bad[0].problems else None
            why = f"{bad[0].run_id}: {first.type}: {first.message}" if first else "it holds no run"
            raise VerificationFailedError(f"archive {path} does not verify ({why}); nothing imported",
                                          problems=[r.to_dict() for r in bad[:20]])
        manifest = check.manifest
        source = FileStore(folder, durability="none")
        try:
            copied = transfer_store(source, store, runs=list(manifest["runs"]))
        finally:
            source.close()
    return ArchiveReport(path=str(path), runs=manifest["runs"], copied=copied.copied, already=copied.already,
                         files=len(manifest["files"]), snapshots=copied.snapshots, artifacts=copied.artifacts,
                         secrets=bool(manifest.get("secrets")))


def check_output_path(path: str) -> Path:
    """The archive path an export writes (``InvalidInputError`` for a directory)."""
    target = Path(path)
    if target.is_dir():
        raise InvalidInputError(f"-o {path} is a directory; give the archive's file name (e.g. runs.tar.gz)")
    return target


__all__ = ["ARCHIVE_FORMAT", "ARCHIVE_REPORT", "ArchiveCheck", "ArchiveReport", "MANIFEST", "check_output_path",
           "export_archive", "import_archive", "opened_archive", "select_runs", "verify_archive"]
