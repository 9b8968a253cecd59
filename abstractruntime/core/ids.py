"""Ids: the one validator for run, snapshot, artifact and bookmark ids (standard library only)."""

from __future__ import annotations

import re

from .errors import InvalidIdError

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_ID_RE = re.compile(ID_PATTERN)


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
