"""Ids: the one place that says what a run, snapshot, bookmark or artifact id may be (standard library only).

Run, snapshot and bookmark ids share :data:`ID_PATTERN`. Artifact ids keep the narrower rule
they had in AbstractRuntime 0.0.1 (:data:`ARTIFACT_ID_PATTERN`: no ``.``, since they name
``<id>.bin`` / ``<id>.meta`` files side by side; a leading ``_`` or ``-`` is allowed), so ids
stored by either release stay valid.
"""

from __future__ import annotations

import re

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
