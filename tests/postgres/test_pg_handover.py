"""The PostgreSQL store keeps a run warm between ticks as the file store does: the attacks of
tests/kernel/test_handover_attacks.py (an object put at a second place, a plain container put
by C code, ``heapq``) end where the same run ticked from its files ends."""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any, Callable

from abstractruntime.core.jcs import jcs
from abstractruntime.storage.postgres.verify import verify_run

from tests.kernel.test_handover_attacks import (ALIASES, C_PLAIN, Step, _c_setup, _change_through_a, _setup,
                                                _steps_loop, run_cold)


def test_the_postgresql_store_keeps_runs_warm_as_the_file_store_does(open_pg: Callable[..., Any],
                                                                    tmp_path: Path) -> None:
    put, change = C_PLAIN["a plain dict C-appended to a nested list"]
    steps: dict[int, Step] = {1: lambda v: (_setup(v), _c_setup(v)), 2: ALIASES["a variable appended to a list"],
                              3: lambda v: (_change_through_a(v), put(v)), 4: change,
                              5: lambda v: heapq.heappush(v["a"]["items"], 0)}
    loop = _steps_loop(steps, 8)
    wf = loop.workflow()
    pg = open_pg()
    rt = pg.runtime()
    run_id = rt.start(workflow=wf, vars={"messages": [{"role": "user", "content": "go"}]})
    while (state := rt.tick(workflow=wf, run_id=run_id, max_steps=1)).status.value == "running":
        assert jcs(open_pg().runtime().get_state(run_id).vars) == jcs(state.vars)
    assert state.status.value == "completed", state.error
    live = jcs(state.vars)
    assert jcs(open_pg().runtime().get_state(run_id).vars) == live
    assert live == run_cold(tmp_path / "cold", _steps_loop(steps, 8),
                            first={"messages": [{"role": "user", "content": "go"}]})
    assert verify_run(pg, run_id).ok
