"""Who did it: stable actor identifiers recorded in every ledger record."""

from __future__ import annotations

from .fingerprint import ACTOR_ID_PREFIX, ActorFingerprint, compute_actor_id

__all__ = ["ActorFingerprint", "compute_actor_id", "ACTOR_ID_PREFIX"]
