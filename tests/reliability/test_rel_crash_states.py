"""Battery 2: every state a crash could leave, under a model of POSIX semantics (see crashsim.py).

``RELIABILITY_CRASH_SAMPLES`` random mixes per crash point (CI: 1; long form: more), on top
of the pessimistic (only fsynced data) and the kill -9 (everything written) states.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from . import crashsim

SAMPLES = int(os.environ.get("RELIABILITY_CRASH_SAMPLES", "1"))
SEED = int(os.environ.get("RELIABILITY_SEED", "0"))


@pytest.fixture(autouse=True)
def _quiet_torn_tail_warnings(caplog: pytest.LogCaptureFixture) -> None:
    # Thousands of states with torn tails: the warnings are expected and only slow pytest down.
    caplog.set_level(logging.ERROR, logger="abstractruntime.storage")


@pytest.mark.slow
def test_every_crash_state_opens_verifies_and_loses_no_acknowledged_step(tmp_path: Path) -> None:
    report = crashsim.simulate(tmp_path / "sim", samples=SAMPLES, seed=SEED)
    print(f"crash states: { {k: v for k, v in report.to_dict().items() if k != 'violations'} }")
    assert report.violations == []
    assert report.crash_points > 60  # the workload really wrote things
    assert report.states == report.crash_points * (2 + SAMPLES)


# Each call site whose fsync the protocol needs. Random states are sampled too: some losses
# (a new ledger's directory entry) only show when one unfsynced entry survives and another not.
FSYNC_SITES = {
    "append_bytes: ledger data": ("append_bytes",),
    "atomic_write_bytes: temp file data": ("atomic_write_bytes",),
    "fsync_dir: every directory fsync": ("fsync_dir",),
    "atomic_write_bytes: directory after the rename": ("fsync_dir", "atomic_write_bytes"),
    "ensure_dir: runs/ after a new run directory": ("fsync_dir", "ensure_dir"),
    "_write: run directory after a new ledger file": ("fsync_dir", "_write"),
}


@pytest.mark.parametrize("site", sorted(FSYNC_SITES))
def test_removing_any_fsync_is_reported_as_a_violation(tmp_path: Path, site: str) -> None:
    report = crashsim.simulate(tmp_path / "sim", samples=8, seed=SEED, modes=("durable",),
                               drop_fsync_in=frozenset({FSYNC_SITES[site]}), stop_after=1, recover=False)
    assert report.violations, f"removing the fsync in {site} went unnoticed"


def test_a_brand_new_store_keeps_acknowledged_runs_after_power_loss(tmp_path: Path) -> None:
    report = crashsim.simulate(tmp_path / "sim", samples=0, modes=("durable",), fresh_root=True,
                               stop_after=1, recover=False)
    assert report.violations == []


def test_model_loses_unsynced_renames_and_data_but_keeps_what_was_fsynced(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "old").write_bytes(b"old")
    model = crashsim.Model(root)
    r = os.fspath(root)
    ops = [
        ("open", f"{r}/new", os.O_WRONLY | os.O_CREAT, 10, False), ("write", 10, b"new data"), ("fsync", 10),
        ("close", 10), ("replace", f"{r}/new", f"{r}/old"),
        ("open", f"{r}/log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 11, False), ("write", 11, b"abc"),
    ]
    for op in ops:
        model.apply(op)
    model.materialize(tmp_path / "durable", "durable")
    model.materialize(tmp_path / "volatile", "volatile")
    assert sorted(p.name for p in (tmp_path / "durable").iterdir()) == ["old"]
    assert (tmp_path / "durable" / "old").read_bytes() == b"old"      # the rename was not fsynced
    assert (tmp_path / "volatile" / "old").read_bytes() == b"new data"
    assert (tmp_path / "volatile" / "log").read_bytes() == b"abc"
    model.apply(("open", r, os.O_RDONLY, 12, True))
    model.apply(("fsync", 12))                                        # the directory fsync
    model.materialize(tmp_path / "after", "durable")
    assert (tmp_path / "after" / "old").read_bytes() == b"new data"
    assert (tmp_path / "after" / "log").read_bytes() == b""           # entry durable, data not fsynced
