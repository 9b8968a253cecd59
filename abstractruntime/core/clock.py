"""Time, in one place: UTC, timezone-aware, injectable.

The runtime never compares timestamps as strings: :func:`parse_iso` turns any ISO-8601
text (``Z`` suffix, offsets, or naive — read as UTC) into an aware ``datetime``.
Tests pass their own :class:`Clock` so timers are testable without sleeping.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Callable, Protocol

_FRACTION = re.compile(r"\.(\d+)")


class Clock(Protocol):
    """Anything callable that returns the current time as an aware UTC datetime."""

    def __call__(self) -> datetime: ...


def utc_now() -> datetime:
    """The system clock, UTC, timezone-aware."""
    return datetime.now(timezone.utc)


def utc_now_iso() -> str:
    """``utc_now()`` as ISO-8601 text (what the files store)."""
    return utc_now().isoformat()


def parse_iso(value: str) -> datetime:
    """Parse ISO-8601 text into an aware UTC datetime.

    Accepts a trailing ``Z`` (Python 3.10's ``fromisoformat`` does not) and any number of
    fraction digits (nor that), and reads a naive timestamp as UTC — the convention
    documented in docs/concepts.md.
    Raises ``ValueError`` on anything else.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO-8601 timestamp, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        # Python 3.10 reads only 3 or 6 fraction digits (3.11 reads any): pad or cut to 6.
        fixed = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
        if fixed == text:
            raise
        parsed = datetime.fromisoformat(fixed)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def to_iso(moment: datetime) -> str:
    """An aware datetime as UTC ISO-8601 text."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


class FixedClock:
    """A clock that returns what you set: ``clock.advance(seconds=60)`` moves it on."""

    def __init__(self, start: datetime | str | None = None) -> None:
        if start is None:
            self._now = utc_now()
        elif isinstance(start, str):
            self._now = parse_iso(start)
        else:
            self._now = parse_iso(to_iso(start))

    def __call__(self) -> datetime:
        return self._now

    def set(self, moment: datetime | str) -> None:
        """Jump to ``moment``."""
        self._now = parse_iso(moment) if isinstance(moment, str) else parse_iso(to_iso(moment))

    def advance(self, *, seconds: float) -> None:
        """Move the clock forward."""
        from datetime import timedelta

        self._now = self._now + timedelta(seconds=seconds)


ClockFn = Callable[[], datetime]
