"""Ids: the one place that says what a run, snapshot, bookmark or artifact id may be (standard library only).

Run, snapshot and bookmark ids share :data:`ID_PATTERN`. Artifact ids keep the narrower rule
they had in AbstractRuntime 0.0.1 (:data:`ARTIFACT_ID_PATTERN`: no ``.``, since they name
``<id>.bin`` / ``<id>.meta`` files side by side; a leading ``_`` or ``-`` is allowed), so ids
stored by either release stay valid.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Optional

from .errors import InvalidIdError

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_ID_RE = re.compile(ID_PATTERN)
MAX_ARTIFACT_ID_LENGTH = 128
ARTIFACT_ID_PATTERN = r"[A-Za-z0-9_-]{1,128}"
_ARTIFACT_ID_RE = re.compile(ARTIFACT_ID_PATTERN)


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a safe id (``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``, no ``..``), else raise.

    Ids become file and directory names, so anything that could climb out of the store
    (``/``, ``..``, absolute paths, NUL) is refused here, before any path is built.
    """
    if not isinstance(value, str) or not _ID_RE.fullmatch(value) or ".." in value:
        raise InvalidIdError(
            f"Invalid {what} {value!r}: use 1-128 of A-Z a-z 0-9 . _ - "
            "(starting with a letter or digit, no '..')",
            value=str(value),
        )
    return value


def _is_control(char: str) -> bool:
    code = ord(char)
    # C0 (NUL, tab, newline ...), DEL and C1, and the Unicode line and paragraph separators.
    return code < 0x20 or 0x7F <= code < 0xA0 or code in (0x2028, 0x2029)


def validate_workflow_id(value: object) -> str:
    """Return ``value`` if it can be a workflow id, else raise :class:`InvalidIdError`.

    A workflow id names code, not a file, so it keeps the freedom it had in AbstractRuntime
    0.0.1 (spaces, ``:``, ``/`` ...); but it is written into every record, index row and
    one-line message, so it must be a non-empty string without control characters (NUL, tab,
    newline, DEL, C1, U+2028/U+2029).
    """
    if not isinstance(value, str) or not value or any(_is_control(c) for c in value):
        shown = value if isinstance(value, str) else type(value).__name__
        raise InvalidIdError(f"Invalid workflow id {shown!r}: use a non-empty string without control characters "
                             "(NUL, tab, newline ...)", value=str(value))
    return value


def validate_artifact_id(artifact_id: object) -> str:
    """Return ``artifact_id`` if it is 1-128 of ``A-Z a-z 0-9 _ -``, else raise :class:`InvalidIdError`.

    Ids become file names, so anything that could leave the directory (``/``, ``.``) is refused.
    """
    if artifact_id == "":
        raise InvalidIdError("artifact_id cannot be empty", value="")
    if not isinstance(artifact_id, str) or not _ARTIFACT_ID_RE.fullmatch(artifact_id):
        raise InvalidIdError(
            f"Invalid artifact_id {artifact_id!r}: use 1-{MAX_ARTIFACT_ID_LENGTH} of A-Z a-z 0-9 _ -",
            value=str(artifact_id),
        )
    return artifact_id


# UUID text is written here rather than with the uuid module: importing uuid loads platform,
# a few milliseconds on every start-up for ids that are only ever stored as text.
_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48))


def uuid_text(value: int, version: Optional[int] = None) -> str:
    """The canonical text of the 128-bit UUID ``value`` (``str(uuid.UUID(int=value, version=version))``)."""
    if version is not None:  # RFC 4122 variant and the version nibble, as uuid.UUID sets them
        value = (value & _VERSION_MASK) | (0x8000 << 48) | (version << 76)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid4_text() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())``."""
    return uuid_text(int.from_bytes(os.urandom(16), "big"), 4)


def uuid5_text(namespace: str, name: str) -> str:
    """The name-based (version 5, SHA-1) UUID as text, as ``str(uuid.uuid5(uuid.UUID(namespace), name))``."""
    ns = bytes.fromhex(namespace.replace("-", ""))
    digest = hashlib.sha1(ns + name.encode("utf-8"), usedforsecurity=False).digest()[:16]
    return uuid_text(int.from_bytes(digest, "big"), 5)
