"""Cron expressions to UTC ticks, through a time zone's daylight-saving changes.

A schedule's ``cron`` is read on the wall clock of its time zone (``tz``, an IANA name such
as ``Europe/Paris``; default ``UTC``); each tick is then one UTC instant, which names it for
good (run ids, the ``(schedule, tick)`` key). The expression is parsed by ``croniter`` (the
``schedules`` extra), imported here lazily so that the kernel imports only the standard
library; the time-zone arithmetic is the standard library's :mod:`zoneinfo`.

Daylight-saving changes, as :func:`ticks_between` resolves them:

- **A wall-clock time that does not exist** (clocks jump forward, e.g. 02:30 on the last
  Sunday of March in Europe/Paris) fires once, as far past the jump as it was past the
  start of the gap: 02:30 fires at 03:30 local time (01:30 UTC). A tick that lands on
  another tick is that tick: it fires once.
- **A wall-clock time that happens twice** (clocks go back, e.g. 02:30 on the last Sunday of
  October) fires once, at its first occurrence (02:30 summer time, 00:30 UTC). An hourly
  expression therefore fires once in the repeated hour, not twice; give ``tz="UTC"`` for a
  schedule that must fire every elapsed hour.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from ..core.errors import InvalidInputError, MissingExtraError

MAX_TICKS = 1000
"""The most ticks one call computes: a schedule stopped for long catches up over several passes."""

_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


def _croniter() -> Any:
    try:
        from croniter import croniter
    except ImportError:
        raise MissingExtraError("croniter", "schedules", "a cron schedule") from None
    return croniter


def zone(tz: str) -> Any:
    """The :class:`zoneinfo.ZoneInfo` named ``tz`` (``InvalidInputError`` for an unknown name)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(tz, str) or not tz.strip() or tz.startswith(("/", ".")) or ".." in tz:
        raise InvalidInputError(f"unknown time zone {tz!r}: give an IANA name such as Europe/Paris or UTC")
    try:
        return ZoneInfo(tz.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInputError(f"unknown time zone {tz!r}: give an IANA name such as Europe/Paris or UTC") from None


def check_cron(expression: str) -> str:
    """``expression`` normalised (single spaces) if it is a five-field cron expression (or an alias
    such as ``@daily``) that fires at least once; ``InvalidInputError`` saying why otherwise."""
    if not isinstance(expression, str):
        raise InvalidInputError("a cron expression must be text such as '0 9 * * MON-FRI'")
    text = " ".join(expression.split())
    fields = text.split(" ") if text else []
    if not (len(fields) == 5 or (len(fields) == 1 and text.lower() in _ALIASES)):
        raise InvalidInputError(f"bad cron expression {expression!r}: it needs 5 fields (minute hour day-of-month "
                                "month day-of-week), e.g. '0 9 * * MON-FRI', or an alias such as @daily")
    croniter = _croniter()
    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except (ValueError, KeyError, TypeError, OverflowError) as exc:  # croniter's errors are ValueErrors
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InvalidInputError(f"bad cron expression {expression!r}: {reason}") from None
    return text


def _utc(local: datetime, tz: Any) -> datetime:
    # fold=0: a repeated time is its first occurrence; a missing one takes the offset before the jump.
    return local.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)


def ticks_between(expression: str, tz: str, after: datetime, until: datetime, *,
                  limit: int = MAX_TICKS) -> list[datetime]:
    """The ticks of ``expression`` in ``tz`` strictly after ``after`` and at or before ``until``
    (aware datetimes), as aware UTC datetimes in increasing order, at most ``limit`` of them."""
    zone_info = zone(tz)
    croniter = _croniter()
    if until <= after:
        return []
    # Walk the wall clock (naive local times), then place each on the UTC line.
    start = after.astimezone(zone_info).replace(tzinfo=None) - timedelta(hours=3)  # a DST jump spans < 3 h
    walk = croniter(check_cron(expression), start)
    found: list[datetime] = []
    last = after
    while len(found) < limit:
        local: datetime = walk.get_next(datetime)
        moment = _utc(local, zone_info)
        if moment > until and local > until.astimezone(zone_info).replace(tzinfo=None) + timedelta(hours=3):
            break
        if last < moment <= until:
            found.append(moment)
            last = moment
    return found


def next_tick(expression: str, tz: str, after: datetime) -> Optional[datetime]:
    """The first tick strictly after ``after`` (within about ten years), or ``None``."""
    horizon = after + timedelta(days=3700)
    step = timedelta(days=40)
    low = after
    while low < horizon:
        found = ticks_between(expression, tz, low, low + step, limit=1)
        if found:
            return found[0]
        low += step
    return None


__all__ = ["MAX_TICKS", "check_cron", "next_tick", "ticks_between", "zone"]
