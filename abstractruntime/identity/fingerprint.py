"""Stable actor identifiers: who (which agent, service or person) took a step.

An :class:`ActorFingerprint` turns a description of an actor into a short, stable
``actor_id`` that the runtime records in every ledger record of the actor's runs.

How ``actor_id`` is derived (stable across processes, machines and releases)::

    payload   = {"kind": kind, "display_name": display_name, "metadata": metadata or {}}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, allow_nan=False)
    actor_id  = "ar_" + sha256(canonical.encode("utf-8")).hexdigest()[:24]

- Keys are sorted at every depth, so the order of ``metadata`` does not matter.
- ``metadata=None`` and ``metadata={}`` give the same id.
- ``display_name`` is part of the identity: renaming an actor gives it a new id. This
  is the derivation AbstractRuntime 0.0.1 uses, so the same inputs give the same
  ``actor_id`` in both and ledgers written by either attribute steps to the same actor.
- NaN and infinities are refused (they have no JSON form), as is anything ``json``
  cannot encode.

This is an identifier, not a credential: anyone who knows the inputs can compute it.
Signed ledger heads (the ``[signing]`` extra) are the tamper-evidence mechanism.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..core.canonical import canonical_json, sha256_hex
from ..core.errors import InvalidInputError

ACTOR_ID_PREFIX = "ar_"
ACTOR_ID_HEX_CHARS = 24


def _canonical_json(payload: Mapping[str, Any]) -> bytes:
    # The same canonical form the ledger hashes records with (core.canonical).
    try:
        return canonical_json(payload)
    except InvalidInputError as exc:
        raise InvalidInputError(f"Actor metadata: {exc}") from exc


def _check_inputs(kind: object, display_name: object, metadata: object) -> None:
    if not isinstance(kind, str) or not kind.strip():
        raise InvalidInputError(f"Actor kind must be a non-empty string, not {kind!r}")
    if display_name is not None and not isinstance(display_name, str):
        raise InvalidInputError(f"Actor display_name must be a string or None, not {type(display_name).__name__}")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidInputError(f"Actor metadata must be a mapping or None, not {type(metadata).__name__}")


def compute_actor_id(*, kind: str, display_name: Optional[str] = None,
                     metadata: Optional[Mapping[str, Any]] = None) -> str:
    """Return the ``actor_id`` for these inputs (see the module docstring for the recipe)."""
    _check_inputs(kind, display_name, metadata)
    payload = {"kind": kind, "display_name": display_name, "metadata": dict(metadata or {})}
    return ACTOR_ID_PREFIX + sha256_hex(_canonical_json(payload))[:ACTOR_ID_HEX_CHARS]


@dataclass(frozen=True)
class ActorFingerprint:
    """An actor (``kind`` such as "agent", "service" or "human") and its stable ``actor_id``.

    Build one with :meth:`from_metadata`; pass ``fingerprint.actor_id`` to
    ``Runtime.start(actor_id=...)`` so every ledger record of the run names the actor.
    ``metadata`` is a private copy taken at construction; treat it as read-only.
    """

    actor_id: str
    kind: str
    display_name: Optional[str] = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        # The generated hash would try to hash the metadata dict; the id already
        # summarises every field, so hash by it.
        return hash(self.actor_id)

    @classmethod
    def from_metadata(cls, *, kind: str, display_name: Optional[str] = None,
                      metadata: Optional[Mapping[str, Any]] = None) -> "ActorFingerprint":
        """Describe an actor and derive its ``actor_id`` from ``kind``, ``display_name`` and ``metadata``.

        Raises :class:`InvalidInputError` for an empty ``kind`` or metadata that is not
        JSON (NaN, sets, objects, ...).
        """
        actor_id = compute_actor_id(kind=kind, display_name=display_name, metadata=metadata)
        # A JSON round trip gives a deep copy that cannot share state with the caller's dict.
        private = json.loads(_canonical_json(dict(metadata or {})))
        return cls(actor_id=actor_id, kind=kind, display_name=display_name, metadata=private)

    def matches_metadata(self) -> bool:
        """True if ``actor_id`` is the id derived from this fingerprint's own fields.

        False for a fingerprint built with an explicit id, or read from data that was
        edited after it was written.
        """
        try:
            return self.actor_id == compute_actor_id(
                kind=self.kind, display_name=self.display_name, metadata=self.metadata)
        except InvalidInputError:
            return False

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"actor_id", "kind", "display_name", "metadata"}``."""
        return {
            "actor_id": self.actor_id,
            "kind": self.kind,
            "display_name": self.display_name,
            "metadata": json.loads(_canonical_json(self.metadata)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ActorFingerprint":
        """Inverse of :meth:`to_dict`; derives ``actor_id`` when the data has none.

        A stored ``actor_id`` is kept as written (use :meth:`matches_metadata` to check it).
        """
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"Actor data must be a mapping, not {type(data).__name__}")
        kind = data.get("kind")
        display_name = data.get("display_name")
        metadata = data.get("metadata")
        derived = cls.from_metadata(kind=kind, display_name=display_name, metadata=metadata)  # type: ignore[arg-type]
        actor_id = data.get("actor_id")
        if actor_id is None:
            return derived
        if not isinstance(actor_id, str) or not actor_id:
            raise InvalidInputError(f"Actor actor_id must be a non-empty string, not {actor_id!r}")
        return cls(actor_id=actor_id, kind=derived.kind, display_name=display_name, metadata=derived.metadata)


__all__ = ["ActorFingerprint", "compute_actor_id", "ACTOR_ID_PREFIX"]
