"""How many statements an effect step sends to PostgreSQL (counted, never timed): one per step,
the append of its batch, plus a few per tick (lock, the run's tokens, unlock) — the run's state
is kept between ticks, not read back from the ledger (benchmarks/pg_profile.py counts them)."""

from __future__ import annotations

from benchmarks.pg_profile import measure


def test_an_effect_step_is_one_statement(database_url: str) -> None:
    result = measure(database_url, 60, 10)
    statements = result["statements"]
    appends = sum(count for label, count in statements.items() if label.startswith("WITH last AS"))
    # One conditional append per step, one more at each tick's end and at the run's start and end.
    assert appends * 60 <= 60 + 6 + 2, statements
    # Per tick of 10 steps: the lock, the two tokens that keep the run warm, the unlock; no read
    # of the ledger's lines after the first tick's (a run replayed on every tick reads them 6 times).
    assert result["round_trips"] <= 1.9, statements
    reads = sum(count for label, count in statements.items() if "line FROM" in label)
    assert reads * 60 <= 2, statements
    # The head an append compares is the primary key's last entry, not a scan of the run's rows:
    # a step reads a few index entries however long the ledger is.
    assert result["index_reads"].get("ledger_pkey", 0) <= 3, result["index_reads"]
    # The run's row is read through its key: twice a step (the mark, the row's token before it),
    # and a few times a tick (the lock, the tokens).
    assert result["index_reads"].get("runs_pkey", 0) <= 3, result["index_reads"]
