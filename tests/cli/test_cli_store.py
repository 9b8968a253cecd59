"""Which store a command uses: found like git finds .git, never created by a command that reads."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from cli_support import BIN


def ar(cwd: Path, *args: str, env: Optional[dict[str, str]] = None, input: Optional[str] = None,
       ) -> subprocess.CompletedProcess:
    """The installed command in ``cwd`` with no store chosen by the environment."""
    base = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
    return subprocess.run([str(BIN), *args], cwd=cwd, env={**base, "NO_COLOR": "1", **(env or {})},
                          capture_output=True, text=True, input=input, timeout=60)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_run_creates_the_store_here_and_says_so_once(tmp_path: Path, wf: Path) -> None:
    first = ar(tmp_path, "run", str(wf / "tools.py"))
    assert first.returncode == 0, first.stderr
    store = tmp_path / ".abstractruntime"
    assert f"created store {store}" in first.stderr
    assert (store / "runs" / first.stdout.strip()).is_dir()
    second = ar(tmp_path, "run", str(wf / "tools.py"))
    assert second.returncode == 0 and "created store" not in second.stderr


def test_commands_find_the_store_from_a_subdirectory(tmp_path: Path, wf: Path) -> None:
    r = ar(tmp_path, "run", str(wf / "approval.py"), "--no-input", "--run-id", "deep1")
    assert r.returncode == 5, r.stderr
    sub = tmp_path / "src" / "pkg"
    sub.mkdir(parents=True)
    shown = ar(sub, "runs", "show", "deep1", "--json")
    assert shown.returncode == 0, shown.stderr
    r = ar(sub, "resume", "deep1", "--current", "--answer", "yes")
    assert r.returncode == 0, r.stderr
    assert not (sub / ".abstractruntime").exists() and not (tmp_path / "src" / ".abstractruntime").exists()
    # A run started in the subdirectory goes to the store found above it, not a new one.
    r = ar(sub, "run", str(wf / "tools.py"))
    assert r.returncode == 0 and "created store" not in r.stderr
    assert (tmp_path / ".abstractruntime" / "runs" / r.stdout.strip()).is_dir()


READERS = [
    ("runs", "list"), ("runs", "show", "r1"), ("ledger", "show", "r1"), ("verify", "--all"), ("verify", "r1"),
    ("resume", "r1", "--answer", "yes"), ("tick", "r1"), ("tick", "--due"), ("emit", "k1"), ("cancel", "r1"),
    ("snapshot", "list"), ("bookmark", "list", "r1"), ("tools", "list", "r1"), ("worker", "--once"),
]


@pytest.mark.parametrize("args", READERS, ids=[" ".join(a) for a in READERS])
def test_no_store_is_not_found_and_nothing_is_created(tmp_path: Path, args: tuple[str, ...]) -> None:
    here = tmp_path / "empty"
    here.mkdir()
    r = ar(here, *args)
    assert r.returncode == 4, (r.returncode, r.stderr)
    assert r.stdout == ""
    assert r.stderr.startswith("error: no store found: looked for " + str(here / ".abstractruntime"))
    assert "Traceback" not in r.stderr
    assert tree(tmp_path) == ["empty"]


def test_a_mistyped_store_is_named_and_not_created(tmp_path: Path, wf: Path) -> None:
    assert ar(tmp_path, "--store", "runs-store", "run", str(wf / "tools.py")).returncode == 0
    r = ar(tmp_path, "--store", "runs-stor", "runs", "list")
    assert r.returncode == 4
    assert r.stderr.strip() == "error: no store at runs-stor (from --store)"
    r = ar(tmp_path, "runs", "list", env={"ABSTRACTRUNTIME_STORE": str(tmp_path / "typo")})
    assert r.returncode == 4
    assert r.stderr.strip() == f"error: no store at {tmp_path / 'typo'} (from $ABSTRACTRUNTIME_STORE)"
    assert not (tmp_path / "runs-stor").exists() and not (tmp_path / "typo").exists()


def test_unknown_run_names_the_store_searched(tmp_path: Path, wf: Path) -> None:
    assert ar(tmp_path, "run", str(wf / "tools.py")).returncode == 0
    r = ar(tmp_path, "runs", "show", "nope")
    assert r.returncode == 4
    assert r.stderr.strip() == f"error: Unknown run_id: nope (store: {tmp_path / '.abstractruntime'})"


def test_verify_all_with_no_runs_is_not_all_ok(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    r = ar(tmp_path, "--store", "store", "verify", "--all")
    assert r.returncode == 4
    assert "all ok" not in r.stderr
    assert r.stderr.strip() == f"error: no runs to verify in store {tmp_path / 'store'}"


def test_find_store_library_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from abstractruntime.storage.store import StoreNotFoundError, find_store, locate_store

    monkeypatch.delenv("ABSTRACTRUNTIME_STORE", raising=False)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    with pytest.raises(StoreNotFoundError) as info:
        find_store(start=deep)
    assert info.value.details["searched"][:3] == [str(deep / ".abstractruntime"),
                                                  str(tmp_path / "a" / ".abstractruntime"),
                                                  str(tmp_path / ".abstractruntime")]
    (tmp_path / ".abstractruntime").mkdir()
    assert find_store(start=deep) == tmp_path / ".abstractruntime"
    assert locate_store(start=deep).source == "found"
    assert locate_store("elsewhere", start=deep).source == "option"
