"""Artifacts: large values kept out of run state and the ledger, referenced by id.

A node stores a document, a long LLM answer or a tool's output with
``meta = store.store_json(value, run_id=run.run_id)`` and keeps only the small reference
``artifact_ref(meta.artifact_id) == {"$artifact": meta.artifact_id}`` in ``run.vars``.

Ids are content addresses by default: :func:`compute_artifact_id` is the first 32 hex
digits of the SHA-256 of the bytes, so the same bytes always get the same id (stored
once). A caller may pass its own ``artifact_id`` instead (``[A-Za-z0-9_-]``, 1-128 chars).

:class:`FileArtifactStore` keeps ``<base>/artifacts/<id>.bin`` (the bytes) and
``<id>.meta`` (versioned JSON metadata). The ``.meta`` file is what makes an artifact
exist: it is written after the ``.bin`` and removed before it, so a crash can only leave
an invisible orphan ``.bin``, which the next store of that id overwrites. See
docs/artifacts.md.
"""

from __future__ import annotations

import contextlib

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from ..core.clock import parse_iso, to_iso, utc_now
from ..core.errors import (
    CorruptRecordError,
    InvalidIdError,
    InvalidInputError,
    StorageError,
    UnsupportedFormatError,
)
from . import fsio

META_FORMAT = 1
"""Version of the ``.meta`` file layout; a newer one is refused, never misread."""

BytesLike = bytes | bytearray | memoryview
"""What ``store`` accepts as content (stored as an immutable ``bytes`` copy)."""

MAX_ID_LENGTH = 128
_ID_RE = re.compile(r"[A-Za-z0-9_-]+")
_REF_KEY = "$artifact"


def compute_artifact_id(content: bytes) -> str:
    """The content address of ``content``: the first 32 hex digits of its SHA-256."""
    return hashlib.sha256(content).hexdigest()[:32]


def validate_artifact_id(artifact_id: object) -> str:
    """Return ``artifact_id`` if it is 1-128 of ``A-Z a-z 0-9 _ -``, else raise :class:`InvalidIdError`.

    Ids become file names, so anything that could leave the directory (``/``, ``.``) is refused.
    """
    if artifact_id == "":
        raise InvalidIdError("artifact_id cannot be empty", value="")
    if (
        not isinstance(artifact_id, str)
        or len(artifact_id) > MAX_ID_LENGTH
        or not _ID_RE.fullmatch(artifact_id)
    ):
        raise InvalidIdError(
            f"Invalid artifact_id {artifact_id!r}: use 1-{MAX_ID_LENGTH} of A-Z a-z 0-9 _ -",
            value=str(artifact_id),
        )
    return artifact_id


@dataclass
class ArtifactMetadata:
    """What is known about a stored artifact without reading its bytes.

    ``created_at`` is UTC ISO-8601 text; ``sha256`` is the full hex digest of the content.
    """

    artifact_id: str
    content_type: str
    size_bytes: int
    created_at: str
    run_id: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field."""
        return {**dataclasses.asdict(self), "tags": dict(self.tags)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArtifactMetadata":
        """Build from :meth:`to_dict` output (unknown keys such as ``format`` are ignored)."""
        return cls(
            artifact_id=data["artifact_id"],
            content_type=data["content_type"],
            size_bytes=data["size_bytes"],
            created_at=data["created_at"],
            run_id=data.get("run_id"),
            tags=dict(data.get("tags") or {}),
            sha256=data.get("sha256"),
        )

    def copy(self) -> "ArtifactMetadata":
        """An independent copy (stores hand these out so callers cannot edit stored state)."""
        return dataclasses.replace(self, tags=json.loads(json.dumps(self.tags)))


@dataclass
class Artifact:
    """An artifact's bytes and metadata, as returned by ``load``."""

    metadata: ArtifactMetadata
    content: bytes

    @property
    def artifact_id(self) -> str:
        """The artifact's id."""
        return self.metadata.artifact_id

    @property
    def content_type(self) -> str:
        """The MIME (or semantic) type given when it was stored."""
        return self.metadata.content_type

    def as_text(self, encoding: str = "utf-8") -> str:
        """The content decoded as text."""
        return self.content.decode(encoding)

    def as_json(self) -> Any:
        """The content parsed as strict JSON (no NaN/Infinity, no duplicate keys)."""
        return fsio.loads_strict(self.content)


def _check_inputs(
    content: object, content_type: object, run_id: object, tags: object
) -> tuple[bytes, dict[str, Any]]:
    """Validate ``store`` arguments; return the content as bytes and a private copy of the tags."""
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise InvalidInputError(
            f"artifact content must be bytes, not {type(content).__name__} (use store_text or store_json)"
        )
    if not isinstance(content_type, str) or not content_type:
        raise InvalidInputError("content_type must be a non-empty string")
    if run_id is not None and not isinstance(run_id, str):
        raise InvalidInputError(f"run_id must be a string or None, not {type(run_id).__name__}")
    if tags is None:
        tags = {}
    if not isinstance(tags, dict) or not all(isinstance(key, str) for key in tags):
        raise InvalidInputError("tags must be a dict with string keys")
    try:
        # A round trip both proves the tags are strict JSON and detaches them from the caller.
        tags_copy = json.loads(json.dumps(tags, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"tags must be JSON-serialisable: {exc}") from exc
    return bytes(content), tags_copy


class ArtifactStore(ABC):
    """Where artifacts live.

    A backend implements :meth:`_put` (or overrides :meth:`store`) and the six abstract
    readers/deleters; ``store`` validation, ``delete_by_run`` and the text/JSON helpers come
    free. Every method that takes an id validates it (``InvalidIdError``, a ``ValueError``).
    """

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or utc_now

    def store(
        self,
        content: BytesLike,
        *,
        content_type: str = "application/octet-stream",
        run_id: str | None = None,
        tags: dict[str, Any] | None = None,
        artifact_id: str | None = None,
    ) -> ArtifactMetadata:
        """Store ``content``; the id is its content address unless ``artifact_id`` is given.

        Storing under an existing id replaces the bytes and the metadata (last store wins).
        Validates the arguments, builds the metadata and hands both to :meth:`_put`.
        """
        data, tags_copy = _check_inputs(content, content_type, run_id, tags)
        digest = hashlib.sha256(data).hexdigest()
        chosen = digest[:32] if artifact_id is None else validate_artifact_id(artifact_id)
        meta = ArtifactMetadata(
            artifact_id=chosen,
            content_type=content_type,
            size_bytes=len(data),
            created_at=to_iso(self._clock()),
            run_id=run_id,
            tags=tags_copy,
            sha256=digest,
        )
        self._put(data, meta)
        return meta.copy()

    def _put(self, content: bytes, meta: ArtifactMetadata) -> None:
        """Persist validated content and metadata (backends implement this or override ``store``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _put() or store()")

    @abstractmethod
    def load(self, artifact_id: str) -> Artifact | None:
        """The artifact, or ``None`` if there is none with this id."""

    @abstractmethod
    def get_metadata(self, artifact_id: str) -> ArtifactMetadata | None:
        """The metadata without the bytes, or ``None``."""

    @abstractmethod
    def exists(self, artifact_id: str) -> bool:
        """Whether an artifact with this id is stored."""

    @abstractmethod
    def delete(self, artifact_id: str) -> bool:
        """Delete the artifact; ``True`` if it existed."""

    @abstractmethod
    def list_by_run(self, run_id: str) -> list[ArtifactMetadata]:
        """Metadata of the artifacts stored with this ``run_id``, oldest first."""

    @abstractmethod
    def list_all(self, *, limit: int = 1000) -> list[ArtifactMetadata]:
        """Metadata of all artifacts, newest first, at most ``limit``."""

    def delete_by_run(self, run_id: str) -> int:
        """Delete every artifact stored with this ``run_id``; return how many were deleted."""
        return sum(1 for meta in self.list_by_run(run_id) if self.delete(meta.artifact_id))

    def store_text(
        self,
        text: str,
        *,
        content_type: str = "text/plain",
        encoding: str = "utf-8",
        run_id: str | None = None,
        tags: dict[str, Any] | None = None,
        artifact_id: str | None = None,
    ) -> ArtifactMetadata:
        """Store ``text`` encoded with ``encoding`` (``text/plain`` by default)."""
        if not isinstance(text, str):
            raise InvalidInputError(f"store_text needs a str, not {type(text).__name__}")
        data = text.encode(encoding)
        return self.store(data, content_type=content_type, run_id=run_id, tags=tags, artifact_id=artifact_id)

    def store_json(
        self,
        data: Any,
        *,
        run_id: str | None = None,
        tags: dict[str, Any] | None = None,
        artifact_id: str | None = None,
    ) -> ArtifactMetadata:
        """Store ``data`` as compact, key-sorted JSON (``application/json``).

        Sorted keys make equal values produce equal bytes, hence the same content address.
        NaN and Infinity are refused: they are not JSON.
        """
        try:
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"store_json needs JSON-serialisable data: {exc}") from exc
        data = text.encode("utf-8")
        return self.store(data, content_type="application/json", run_id=run_id, tags=tags, artifact_id=artifact_id)

    def load_text(self, artifact_id: str, encoding: str = "utf-8") -> str | None:
        """The content decoded as text, or ``None`` if missing."""
        artifact = self.load(artifact_id)
        return None if artifact is None else artifact.as_text(encoding)

    def load_json(self, artifact_id: str) -> Any | None:
        """The content parsed as JSON, or ``None`` if missing."""
        artifact = self.load(artifact_id)
        return None if artifact is None else artifact.as_json()


def _check_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise InvalidInputError(f"limit must be a non-negative integer, not {limit!r}")
    return limit


def _newest_first(metas: list[ArtifactMetadata], limit: int) -> list[ArtifactMetadata]:
    metas.sort(key=lambda m: (parse_iso(m.created_at), m.artifact_id), reverse=True)
    return metas[:limit]


def _oldest_first(metas: list[ArtifactMetadata]) -> list[ArtifactMetadata]:
    return sorted(metas, key=lambda m: (parse_iso(m.created_at), m.artifact_id))


class InMemoryArtifactStore(ArtifactStore):
    """Artifacts in a dict: for tests and short-lived processes. Thread-safe."""

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(clock=clock)
        self._items: dict[str, Artifact] = {}
        self._lock = threading.Lock()

    def _put(self, content: bytes, meta: ArtifactMetadata) -> None:
        with self._lock:
            self._items[meta.artifact_id] = Artifact(metadata=meta.copy(), content=content)

    def load(self, artifact_id: str) -> Artifact | None:
        """See :meth:`ArtifactStore.load`."""
        item = self._items.get(validate_artifact_id(artifact_id))
        return None if item is None else Artifact(metadata=item.metadata.copy(), content=item.content)

    def get_metadata(self, artifact_id: str) -> ArtifactMetadata | None:
        """See :meth:`ArtifactStore.get_metadata`."""
        item = self._items.get(validate_artifact_id(artifact_id))
        return None if item is None else item.metadata.copy()

    def exists(self, artifact_id: str) -> bool:
        """See :meth:`ArtifactStore.exists`."""
        return validate_artifact_id(artifact_id) in self._items

    def delete(self, artifact_id: str) -> bool:
        """See :meth:`ArtifactStore.delete`."""
        with self._lock:
            return self._items.pop(validate_artifact_id(artifact_id), None) is not None

    def list_by_run(self, run_id: str) -> list[ArtifactMetadata]:
        """See :meth:`ArtifactStore.list_by_run`."""
        with self._lock:
            metas = [a.metadata.copy() for a in self._items.values() if a.metadata.run_id == run_id]
        return _oldest_first(metas)

    def list_all(self, *, limit: int = 1000) -> list[ArtifactMetadata]:
        """See :meth:`ArtifactStore.list_all`."""
        _check_limit(limit)
        with self._lock:
            metas = [a.metadata.copy() for a in self._items.values()]
        return _newest_first(metas, limit)


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
        return _FileLock(self._lock_path, exclusive)

    def _put(self, content: bytes, meta: ArtifactMetadata) -> None:
        # Called by store(), which validated everything; writes the .bin first, then the .meta.
        doc = {"format": META_FORMAT, **meta.to_dict()}
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
        if len(data) != meta.size_bytes or (
            meta.sha256 is not None and hashlib.sha256(data).hexdigest() != meta.sha256
        ):
            raise CorruptRecordError(
                "artifact content does not match the size/sha256 in its .meta", path=str(bin_path)
            )
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


class _FileLock:
    """A blocking ``flock`` on the store's lock file (shared for readers, exclusive for writers)."""

    def __init__(self, path: Path, exclusive: bool) -> None:
        self._path = path
        self._mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        self._fd = -1

    def __enter__(self) -> "_FileLock":
        try:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, fsio.FILE_MODE)
            fcntl.flock(self._fd, self._mode)
        except OSError as exc:
            if self._fd >= 0:
                os.close(self._fd)
            raise StorageError(f"Cannot lock {self._path}: {exc.strerror or exc}") from exc
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)  # closing releases the flock


def artifact_ref(artifact_id: str) -> dict[str, str]:
    """The reference to keep in run state instead of the value: ``{"$artifact": artifact_id}``."""
    return {_REF_KEY: validate_artifact_id(artifact_id)}


def is_artifact_ref(value: Any) -> bool:
    """Whether ``value`` is an artifact reference (a dict with a string ``"$artifact"``)."""
    return isinstance(value, dict) and isinstance(value.get(_REF_KEY), str)


def get_artifact_id(ref: dict[str, Any]) -> str:
    """The id inside an artifact reference; :class:`InvalidInputError` if it is not one."""
    artifact_id = ref.get(_REF_KEY) if isinstance(ref, dict) else None
    if not isinstance(artifact_id, str):
        raise InvalidInputError(f"Not an artifact reference: {ref!r}")
    return artifact_id


def resolve_artifact(ref: Any, store: ArtifactStore) -> Artifact | None:
    """Load what ``ref`` points to; ``None`` if ``ref`` is not a reference or the artifact is gone."""
    if not is_artifact_ref(ref):
        return None
    return store.load(get_artifact_id(ref))


__all__ = [
    "Artifact",
    "ArtifactMetadata",
    "ArtifactStore",
    "FileArtifactStore",
    "InMemoryArtifactStore",
    "META_FORMAT",
    "artifact_ref",
    "compute_artifact_id",
    "get_artifact_id",
    "is_artifact_ref",
    "resolve_artifact",
    "validate_artifact_id",
]
