"""How long a provider asked us to wait: ``Retry-After`` and the providers' reset headers.

A 429 (too many requests) or 503 (unavailable) that says when to come back becomes a durable
timer wait of that length (``EffectOutcome.delayed``), not a failed attempt. Recognised, in
this order:

- ``retry-after-ms`` (milliseconds), ``Retry-After`` (seconds, or an HTTP date);
- ``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens`` (OpenAI: durations such as
  ``1s``, ``6m0s``, ``20ms``; the longer of the two);
- ``anthropic-ratelimit-*-reset`` and other ``*ratelimit*reset`` headers holding an RFC 3339
  time or a number of seconds.

A delay is at least :data:`MIN_DELAY_S` (a second: a server answering ``Retry-After: 0``
forever does not get a tight loop of calls) and at most :data:`MAX_DELAY_S` (a week: a server
cannot park a run forever).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Mapping, Optional

from ...core.clock import parse_iso

RATE_LIMIT_STATUSES = frozenset({429, 503})
MIN_DELAY_S = 1.0
MAX_DELAY_S = 7 * 24 * 3600.0
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|h|m|s))")


def _seconds(text: str, now: datetime) -> Optional[float]:
    """Seconds in ``text``: a number, a Go-style duration (``6m0s``), an HTTP date or an RFC 3339 time."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if parts and "".join(a + b for a, b in parts) == text.replace(" ", ""):
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(amount) * scale[unit] for amount, unit in parts)
    moment: Optional[datetime] = None
    try:
        moment = parse_iso(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - now).total_seconds()


def retry_after_seconds(status: int, headers: Mapping[str, str], *, now: Optional[datetime] = None) -> Optional[float]:
    """The wait a 429/503 answer asks for, in seconds (>= 0, capped), or ``None`` when it says nothing."""
    if status not in RATE_LIMIT_STATUSES:
        return None
    at = now or datetime.now(timezone.utc)
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    found: Optional[float] = None
    if "retry-after-ms" in lowered:
        value = _seconds(lowered["retry-after-ms"], at)
        found = value / 1000.0 if value is not None else None
    if found is None and "retry-after" in lowered:
        found = _seconds(lowered["retry-after"], at)
    if found is None:
        resets = [_seconds(v, at) for k, v in lowered.items() if "ratelimit" in k and k.endswith("reset")
                  or k.startswith("x-ratelimit-reset")]
        known = [r for r in resets if r is not None]
        found = max(known) if known else None
    if found is None or found != found:  # NaN
        return None
    return min(max(found, MIN_DELAY_S), MAX_DELAY_S)


__all__ = ["MAX_DELAY_S", "MIN_DELAY_S", "RATE_LIMIT_STATUSES", "retry_after_seconds"]
