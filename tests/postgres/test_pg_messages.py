"""What a user meets at the command line when a connection string is mistyped or a database
holds someone else's tables: one clear line, and never a password (or a piece of one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from abstractruntime.storage.postgres.schema import MIGRATIONS

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "abstractruntime")
APPROVAL = REPO / "sample_runs" / "workflows" / "approval.py"
SECRET = "Tr0ub4dor-x9"


def _cli(store: str, *args: str, cwd: Any = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
    return subprocess.run([CLI, "--store", store, "--no-input", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=env, cwd=cwd)


def _leaks(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The pieces of the password found in the command's output (both streams)."""
    text = result.stdout + result.stderr
    return [piece for piece in (SECRET, SECRET[:6], SECRET[-5:], "x9@", "tail-fragment") if piece in text]


def _parts(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port, parts.path.lstrip("/")


def test_no_form_of_a_mistyped_connection_string_prints_the_password(database_url: str, tmp_path: Path) -> None:
    host, port, db = _parts(database_url)
    stores = [
        f"postgresql://postgres:{SECRET}/b@{host}:{port}/{db}",          # '/' in the password
        f"postgresql://postgres:{SECRET} tail-fragment@{host}:{port}/{db}",  # a space
        f"postgresql://postgres:x9@{SECRET}@{host}:{port}/{db}",         # '@' in the password
        f"postgresql://postgres:{SECRET}%zz@{host}:{port}/{db}",         # a broken escape
        f"host={host} port={port} dbname={db} password={SECRET} tail-fragment",  # unquoted space
        f"host={host} port=1 dbname={db} password={SECRET}",             # well formed, nothing listens
        f"hots={host} password={SECRET}",                                # a misspelt keyword
    ]
    for store in stores:
        for json_flag in ((), ("--json",)):
            result = _cli(store, "runs", "list", *json_flag, cwd=tmp_path)
            assert result.returncode != 0, store
            assert _leaks(result) == [], (store, result.stdout + result.stderr)
            assert "Traceback" not in result.stderr
            if json_flag:
                assert json.loads(result.stdout)["error"]["message"]
    # A key/value string is never taken for a folder: nothing was created under its name.
    assert list(tmp_path.iterdir()) == []


def test_a_key_value_connection_string_is_a_store(database_url: str, tmp_path: Path) -> None:
    host, port, db = _parts(database_url)
    kv = f"host={host} port={port} dbname={db} user=postgres password='{SECRET} with a space'"
    started = _cli(kv, "run", str(APPROVAL), "--run-id", "kv1", "--var", "service=billing", cwd=tmp_path)
    assert started.returncode == 5, started.stderr
    assert _cli(kv, "resume", started.stdout.strip(), "--answer", "yes").returncode == 0
    listed = _cli(kv, "runs", "list", "--json")
    assert [r["run_id"] for r in json.loads(listed.stdout)] == ["kv1"]
    assert _cli(database_url, "runs", "show", "kv1", "--json").returncode == 0  # the same database
    copied = _cli(kv, "store", "copy", "--to", str(tmp_path / "copy"), cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    worker = _cli(kv, "worker", "--once")
    assert worker.returncode == 0 and _leaks(worker) == []
    assert list(tmp_path.iterdir()) == [tmp_path / "copy"]


@pytest.mark.parametrize("table", ["schema_migrations", "runs"])
def test_a_table_made_by_another_program_gets_one_clear_sentence(database_url: str, table: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA abstractruntime")
        conn.execute(f"CREATE TABLE abstractruntime.{table} (id serial PRIMARY KEY, name text)")
        conn.execute(f"INSERT INTO abstractruntime.{table} (name) VALUES ('theirs')")
    for args in (("runs", "list"), ("run", str(APPROVAL), "--var", "service=x")):
        result = _cli(database_url, *args)
        assert result.returncode == 1, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert f'"{table}"' in lines[0] and "not created by abstractruntime" in lines[0]
        assert "does not exist" not in lines[0] and "already exists" not in lines[0]
    with psycopg.connect(database_url, autocommit=True) as conn:  # their table is untouched
        assert conn.execute(f"SELECT name FROM abstractruntime.{table}").fetchall() == [("theirs",)]


@pytest.mark.parametrize("delete", ["all", "newest"])
def test_a_schema_whose_migration_rows_were_deleted_gets_one_clear_sentence(database_url: str, delete: str) -> None:
    import psycopg

    started = _cli(database_url, "run", str(APPROVAL), "--run-id", "r1", "--var", "service=x")
    assert started.returncode == 5, started.stderr
    where = "" if delete == "all" else " WHERE version = (SELECT max(version) FROM abstractruntime.schema_migrations)"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM abstractruntime.schema_migrations" + where)
    # Every open refuses, a read as well (an open upgrades an older schema in place).
    for args in (("runs", "list"), ("worker", "--once"), ("run", str(APPROVAL), "--var", "service=x")):
        result = _cli(database_url, *args)
        assert result.returncode == 1, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "schema_migrations" in lines[0] and "by hand" in lines[0], lines[0]
        assert "already exists" not in lines[0] and "not created by abstractruntime" not in lines[0]
    with psycopg.connect(database_url, autocommit=True) as conn:  # nothing was created, changed or recorded
        assert conn.execute("SELECT run_id FROM abstractruntime.runs").fetchall() == [("r1",)]
        versions = conn.execute("SELECT count(*) FROM abstractruntime.schema_migrations").fetchone()
        assert versions == ((0,) if delete == "all" else (len(MIGRATIONS) - 1,))
