"""Artifacts as files: ``<base>/artifacts/<id>.bin`` (the bytes) and ``<id>.meta`` (JSON metadata).

The ``.meta`` file is what makes an artifact exist: it is written after the ``.bin`` and
removed before it, so a crash can only leave an invisible orphan ``.bin``, which the next
store of that id overwrites. See docs/artifacts.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from ..core.clock import parse_iso
from ..core.errors import CorruptRecordError, StorageError, UnsupportedFormatError
from . import fsio
from .artifact_base import (META_FORMAT, Artifact, ArtifactMetadata, ArtifactStore, _check_limit, _newest_first,
                            _oldest_first, check_content, validate_artifact_id)


class FileArtifactStore(ArtifactStore):
    """Artifacts as files: ``<base_dir>/artifacts/<id>.bin`` and ``<id>.meta``.

    Writes are atomic and, with ``durability="fsync"`` (the default), survive power loss.
    ``store`` and ``delete`` hold an exclusive ``flock`` on ``artifacts/.lock`` and ``load``
    a shared one, so a ``.bin`` and its ``.meta`` always belong together, across threads and
    processes. ``load`` checks the bytes against the recorded size and SHA-256.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        durability: str = "fsync",
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(clock=clock)
        self._durable = fsio.check_durability(durability) == "fsync"
        self._base = fsio.ensure_dir(Path(base_dir), durable=self._durable)
        # artifacts/ is created by the first store(), so opening a store never writes (a
        # read-only store, or one that never stored an artifact, stays as it is).
        self._dir = self._base / "artifacts"
        if self._dir.is_symlink():
            raise StorageError(f"Refusing symlinked directory {self._dir}")
        self._lock_path = self._dir / ".lock"
        # .meta file name -> (stat signature, parsed metadata): listing re-reads only changed files.
        self._cache: dict[str, tuple[tuple[int, ...], ArtifactMetadata]] = {}
        self._cache_lock = threading.Lock()

    @property
    def base_dir(self) -> Path:
        """The store's base directory (artifacts live in its ``artifacts/`` subdirectory)."""
        return self._base

    # Ids are validated to [A-Za-z0-9_-]+ before these are built, so a name can never
    # leave the directory; symlinks are refused by the O_NOFOLLOW reads and writes in fsio.
    def _bin_path(self, artifact_id: str) -> Path:
        return self._dir / f"{validate_artifact_id(artifact_id)}.bin"

    def _meta_path(self, artifact_id: str) -> Path:
        return self._dir / f"{validate_artifact_id(artifact_id)}.meta"

    def _locked(self, exclusive: bool) -> "Any":
        if exclusive:
            fsio.ensure_dir(self._dir, durable=self._durable)
        elif not self._dir.is_dir():
            return contextlib.nullcontext()  # nothing stored yet: readers find nothing
        return fsio.FileLock(self._lock_path, shared=not exclusive)  # blocking

    def _put(self, content: bytes, meta: ArtifactMetadata) -> None:
        # Called by store(), which validated everything; writes the .bin first, then the .meta.
        doc = {"format": META_FORMAT, **meta.to_dict()}
        # Not the storage codec's compact form on purpose: a .meta file is written for people to
        # read (docs/artifacts.md shows one); nothing hashes it, and it is read back strictly.
        meta_bytes = (json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")
        meta_path = self._meta_path(meta.artifact_id)
        with self._locked(exclusive=True):
            # Replacing different bytes under the same (caller-chosen) id: hide the old artifact
            # first, so a crash mid-way leaves it absent rather than a .meta describing other bytes.
            if meta_path.exists() and self._stored_sha256(meta_path) != meta.sha256:
                _unlink(meta_path)
                if self._durable:
                    fsio.fsync_dir(self._dir)
            # Order matters: once the .meta exists the artifact is visible, so its bytes must
            # already be durable. A crash between the two writes leaves an orphan .bin that
            # nothing reads and that the next store of this id replaces.
            fsio.atomic_write_bytes(self._bin_path(meta.artifact_id), content, durable=self._durable)
            fsio.atomic_write_bytes(meta_path, meta_bytes, durable=self._durable)

    def _stored_sha256(self, meta_path: Path) -> str | None:
        """The sha256 an existing .meta records; ``None`` if unreadable (it gets replaced anyway)."""
        try:
            meta = self._read_meta(meta_path)
        except (CorruptRecordError, UnsupportedFormatError):
            return None
        return None if meta is None else meta.sha256

    def load(self, artifact_id: str) -> Artifact | None:
        """See :meth:`ArtifactStore.load`. Raises :class:`CorruptRecordError` if the bytes do not match."""
        bin_path = self._bin_path(artifact_id)
        meta_path = self._meta_path(artifact_id)
        with self._locked(exclusive=False):
            meta = self._read_meta(meta_path)
            if meta is None:
                return None
            try:
                data = fsio.read_bytes(bin_path)
            except FileNotFoundError:
                raise CorruptRecordError("artifact content file is missing", path=str(bin_path)) from None
        check_content(artifact_id, data, meta, str(bin_path))
        return Artifact(metadata=meta, content=data)

    def get_metadata(self, artifact_id: str) -> ArtifactMetadata | None:
        """See :meth:`ArtifactStore.get_metadata`."""
        return self._read_meta(self._meta_path(artifact_id))

    def exists(self, artifact_id: str) -> bool:
        """See :meth:`ArtifactStore.exists` (an orphan ``.bin`` without ``.meta`` does not count)."""
        return self._meta_path(artifact_id).is_file()

    def delete(self, artifact_id: str) -> bool:
        """See :meth:`ArtifactStore.delete`. Removes the ``.meta`` first, then the ``.bin``."""
        bin_path = self._bin_path(artifact_id)
        meta_path = self._meta_path(artifact_id)
        with self._locked(exclusive=True):
            # The reverse of store's order, for the same reason: a crash in between leaves
            # an invisible orphan .bin, never a .meta whose content is gone.
            existed = _unlink(meta_path)
            _unlink(bin_path)
            if self._durable:
                fsio.fsync_dir(self._dir)
        return existed

    def list_by_run(self, run_id: str) -> list[ArtifactMetadata]:
        """See :meth:`ArtifactStore.list_by_run`. A corrupt ``.meta`` raises :class:`CorruptRecordError`."""
        return _oldest_first([m for m in self._scan() if m.run_id == run_id])

    def list_all(self, *, limit: int = 1000) -> list[ArtifactMetadata]:
        """See :meth:`ArtifactStore.list_all`. A corrupt ``.meta`` raises :class:`CorruptRecordError`."""
        _check_limit(limit)
        return _newest_first(list(self._scan()), limit)

    def _scan(self) -> Iterator[ArtifactMetadata]:
        try:
            entries = [e for e in os.scandir(self._dir) if e.name.endswith(".meta")]
        except FileNotFoundError:
            entries = []  # nothing stored yet
        except OSError as exc:
            raise StorageError(f"Cannot list {self._dir}: {exc.strerror or exc}") from exc
        with self._cache_lock:
            # Forget files that are gone so the cache never outgrows the directory.
            names = {e.name for e in entries}
            for name in [n for n in self._cache if n not in names]:
                del self._cache[name]
        for entry in entries:
            meta = self._read_meta(Path(entry.path))
            if meta is not None:  # deleted since the scandir
                yield meta

    def _read_meta(self, path: Path) -> ArtifactMetadata | None:
        """Parse a ``.meta`` file (cached by inode/size/mtime/ctime); ``None`` if it is missing."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"Cannot stat {path}: {exc.strerror or exc}") from exc
        # Every store replaces the file (new inode), so an unchanged signature means unchanged content.
        signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._cache_lock:
            cached = self._cache.get(path.name)
        if cached is not None and cached[0] == signature:
            return cached[1].copy()
        try:
            doc = fsio.load_json_file(path, expected_format=META_FORMAT, kind="artifact metadata")
        except FileNotFoundError:
            return None
        meta = _meta_from_doc(doc, path)
        with self._cache_lock:
            self._cache[path.name] = (signature, meta)
        return meta.copy()


def _meta_from_doc(doc: dict[str, Any], path: Path) -> ArtifactMetadata:
    """Turn a parsed ``.meta`` document into metadata, refusing anything malformed."""
    expected_id = path.name[: -len(".meta")]
    checks = (
        (doc.get("artifact_id") == expected_id, f"artifact_id is not {expected_id!r}"),
        (isinstance(doc.get("content_type"), str), "content_type is not a string"),
        (type(doc.get("size_bytes")) is int and doc["size_bytes"] >= 0, "size_bytes is not an integer"),
        (isinstance(doc.get("created_at"), str), "created_at is not a string"),
        (doc.get("run_id") is None or isinstance(doc.get("run_id"), str), "run_id is not a string"),
        (isinstance(doc.get("tags", {}), dict), "tags is not an object"),
        (doc.get("sha256") is None or isinstance(doc.get("sha256"), str), "sha256 is not a string"),
    )
    for ok, problem in checks:
        if not ok:
            raise CorruptRecordError(f"artifact metadata is invalid: {problem}", path=str(path))
    try:
        parse_iso(doc["created_at"])
    except ValueError:
        raise CorruptRecordError("artifact metadata has an invalid created_at", path=str(path)) from None
    return ArtifactMetadata.from_dict(doc)


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError(f"Cannot delete {path}: {exc.strerror or exc}") from exc


__all__ = ["FileArtifactStore"]
