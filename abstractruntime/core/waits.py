"""Wait handles: the text that names one wait of one run, ``RUN_ID@wN``.

Every wait a run enters gets an id from its position — ``w`` and the ordinal of the effect
that created it (the run's third effect waits as ``w3``). A handle joins the run id and the
wait id with ``@``, which no run id contains and no shell treats specially, so a script can
pass it on unquoted: ``H=$(abstractruntime run wf.py --no-input)`` then
``abstractruntime resume "$H" --answer yes``. Answering a handle whose wait was already
answered is refused (:class:`~abstractruntime.core.errors.AlreadyAnsweredError`), never
applied to the run's next wait.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from .errors import InvalidInputError
from .ids import validate_id

HANDLE_SEPARATOR = "@"
_WAIT_ID = re.compile(r"w[1-9][0-9]{0,17}")


def format_wait_handle(run_id: str, wait_id: Optional[str]) -> str:
    """``RUN_ID@wN`` (just the run id for a wait without a position, e.g. one set by hand)."""
    return f"{run_id}{HANDLE_SEPARATOR}{wait_id}" if wait_id else run_id


def parse_wait_handle(text: str) -> tuple[str, Optional[str]]:
    """``(run_id, wait_id)`` from a handle, or ``(run_id, None)`` from a bare run id.

    Raises :class:`InvalidInputError` for anything else (an empty part, a wait id that is not
    ``w`` followed by a number, an invalid run id).
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"A wait handle is text like RUN_ID@w3, not {type(text).__name__}")
    run_id, sep, wait_id = text.strip().partition(HANDLE_SEPARATOR)
    validate_id(run_id, "run id")
    if not sep:
        return run_id, None
    if not _WAIT_ID.fullmatch(wait_id):
        raise InvalidInputError(f"{text!r} is not a wait handle: after '@' comes a wait id such as w3")
    return run_id, wait_id


def match_choice(choices: Optional[Sequence[str]], allow_free_text: bool, text: str) -> str:
    """The choice ``text`` picks — the same text in any case, or a unique prefix — else ``text``.

    One rule for every way an answer arrives (``resume``, ``emit``, the prompt): ``Y`` or ``y``
    picks ``yes`` from ``yes``/``no``. With free text allowed only a whole choice (any case) is
    taken as that choice: a short free-text answer must not turn into a choice it happens to begin.
    """
    options = list(choices or [])
    if not options or text in options:
        return text
    wanted = text.strip().casefold()
    if not wanted:
        return text
    same = [c for c in options if c.casefold() == wanted]
    if len(same) == 1:
        return same[0]
    if allow_free_text:
        return text
    prefixed = [c for c in options if c.casefold().startswith(wanted)]
    return prefixed[0] if len(prefixed) == 1 else text
