"""How a worker waits out an unavailable store (abstractruntime/scheduler/outage.py): capped
exponential backoff with jitter, one report when an outage begins and one when it ends, and
giving up only after the operator's limit. The worker loop itself meets a real database
restart in tests/postgres/test_pg_outage.py."""

from __future__ import annotations

import pytest

from abstractruntime.core.errors import DatabaseUnavailableError
from abstractruntime.scheduler.outage import Backoff, Outage


def test_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() -> None:
    lows = Backoff(first=0.2, cap=5.0, rng=lambda: 0.0)
    assert [round(lows.next(), 3) for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.5, 2.5, 2.5]
    highs = Backoff(first=0.2, cap=5.0, rng=lambda: 0.999999)
    assert [round(highs.next(), 2) for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    lows.reset()
    assert round(lows.next(), 3) == 0.1


def test_an_outage_is_reported_once_when_it_begins_and_once_when_it_ends() -> None:
    now = [100.0]
    began: list[str] = []
    ended: list[float] = []
    outage = Outage(on_start=lambda exc: began.append(str(exc)), on_end=ended.append, clock=lambda: now[0],
                    backoff=Backoff(rng=lambda: 0.5))
    outage.ended()  # no outage: nothing to report
    assert not outage.active and ended == []
    for _ in range(5):
        assert outage.failed(DatabaseUnavailableError("connection refused")) > 0
        now[0] += 1.5
    assert began == ["connection refused"] and outage.active
    outage.ended()
    outage.ended()
    assert ended == [7.5] and not outage.active
    outage.failed(DatabaseUnavailableError("again"))
    assert began == ["connection refused", "again"]


def test_an_outage_longer_than_allowed_gives_up() -> None:
    now = [0.0]
    outage = Outage(max_outage=3.0, clock=lambda: now[0], backoff=Backoff(first=10.0, cap=10.0, rng=lambda: 1.0))
    assert outage.failed(DatabaseUnavailableError("refused")) <= 3.05  # never sleeps past the limit
    now[0] = 2.9
    outage.failed(DatabaseUnavailableError("refused"))
    now[0] = 3.2
    with pytest.raises(DatabaseUnavailableError) as info:
        outage.failed(DatabaseUnavailableError("refused"))
    assert "3.2 s" in str(info.value) and "refused" in str(info.value)
    with pytest.raises(ValueError):
        Outage(max_outage=0)
