"""The artifact model and port: ids, metadata, the :class:`ArtifactStore` contract, references.

Ids are content addresses by default: :func:`compute_artifact_id` is the first 32 hex
digits of the SHA-256 of the bytes, so the same bytes always get the same id (stored
once). A caller may pass its own ``artifact_id`` instead (``[A-Za-z0-9_-]``, 1-128 chars).
The stores are :mod:`~abstractruntime.storage.artifact_memory` and
:mod:`~abstractruntime.storage.artifact_files`; :mod:`abstractruntime.storage.artifacts`
exports all of it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from abc import ABC, abstractmethod
from dataclasses import field
from ..core.fastclass import dataclass
from datetime import datetime
from typing import Any, Callable

from ..core.canonical import canonical_json
from ..core.clock import parse_iso, to_iso, utc_now
from ..core.errors import CorruptRecordError, InvalidInputError
from ..core.ids import MAX_ARTIFACT_ID_LENGTH, validate_artifact_id
from ..core.json_codec import loads_strict

META_FORMAT = 1
"""Version of the ``.meta`` file layout; a newer one is refused, never misread."""

BytesLike = bytes | bytearray | memoryview
"""What ``store`` accepts as content (stored as an immutable ``bytes`` copy)."""

MAX_ID_LENGTH = MAX_ARTIFACT_ID_LENGTH
_REF_KEY = "$artifact"


def compute_artifact_id(content: bytes) -> str:
    """The content address of ``content``: the first 32 hex digits of its SHA-256."""
    return hashlib.sha256(content).hexdigest()[:32]


def is_content_address(artifact_id: str) -> bool:
    """True for an id of 32 lower-case hex digits: it names content by its hash (a chosen id that
    looks like one must be one: :meth:`ArtifactStore.store` refuses it otherwise)."""
    return len(artifact_id) == 32 and all(c in "0123456789abcdef" for c in artifact_id)


def check_content(artifact_id: str, data: bytes, meta: "ArtifactMetadata", where: str) -> None:
    """:class:`CorruptRecordError` unless ``data`` is what ``meta`` and the id say: its size, its
    sha256, and — for a content address — the hash the id is the prefix of (``.meta`` is
    beside the bytes and can be rewritten with them; the id is what a run's ledger holds)."""
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != meta.size_bytes or (meta.sha256 is not None and digest != meta.sha256):
        raise CorruptRecordError(f"{where}: artifact content does not match the size/sha256 in its metadata")
    if is_content_address(artifact_id) and digest[:32] != artifact_id:
        raise CorruptRecordError(f"{where}: artifact content does not hash to its id {artifact_id} "
                                 "(replaced, with its metadata?)")


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
        return dataclasses.replace(self, tags=copy.deepcopy(self.tags))


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
        return loads_strict(self.content)


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
        tags_copy = loads_strict(canonical_json(tags, root="tags"))
    except InvalidInputError as exc:
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
        if is_content_address(chosen) and chosen != digest[:32]:
            raise InvalidInputError(f"artifact id {chosen!r} looks like a content address (32 hex digits) but is not "
                                    "this content's: choose another id, or let the store compute it")
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

        The bytes are the ledger's canonical JSON (:func:`~abstractruntime.core.canonical.canonical_json`):
        sorted keys make equal values produce equal bytes, hence the same content address. NaN,
        Infinity and non-string keys are refused (:class:`InvalidInputError` naming the path).
        """
        try:
            content = canonical_json(data, root="data")  # the ledger's canonical form: same value, same bytes
        except InvalidInputError as exc:
            raise InvalidInputError(f"store_json needs JSON-serialisable data: {exc}") from exc
        return self.store(content, content_type="application/json", run_id=run_id, tags=tags, artifact_id=artifact_id)

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


__all__ = ["Artifact", "ArtifactMetadata", "ArtifactStore", "META_FORMAT", "artifact_ref", "compute_artifact_id",
           "get_artifact_id", "is_artifact_ref", "resolve_artifact", "validate_artifact_id"]
