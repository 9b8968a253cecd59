"""Advisory-lock keys: one 64-bit number per named lock, the same in every process and release."""

from __future__ import annotations

import hashlib


def advisory_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key for ``parts`` (stable across processes and versions)."""
    digest = hashlib.sha256("\x1f".join(("abstractruntime", *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


__all__ = ["advisory_key"]
