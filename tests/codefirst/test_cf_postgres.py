"""Code-first runs on every backend the kernel ships — PostgreSQL included — and on PostgreSQL
from the command line: the same positions, replay, block marks and checks as on a folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from abstractruntime import NondeterminismError, step, workflow
from abstractruntime.core.errors import InvalidInputError
from abstractruntime.core.models import RunStatus

BIN = str(Path(sys.executable).parent / "abstractruntime")
CALLS: list[str] = []


def build(service: str) -> dict[str, str]:
    CALLS.append(service)
    return {"image": f"{service}:1"}


@workflow("cf_deploy")
def deploy(ctx: Any, service: str) -> dict[str, Any]:
    image = ctx.step(build, service)
    answer = ctx.ask(f"Deploy {service}?", choices=["yes", "no"])
    stamp = ctx.now()
    return {"image": image, "answer": answer, "stamped": stamp.tzinfo is not None}


def test_a_code_first_run_on_every_backend(backend: Any) -> None:
    CALLS.clear()
    rt = backend.runtime()
    if "upstream-style" in backend.name:
        # A ledger written for 0.0.1 keeps asdict(record): no place for a step's name. Refused at start.
        with pytest.raises(InvalidInputError, match="SEALED_LINES"):
            rt.start(workflow=deploy, vars={"service": "web"})
        return
    run_id = rt.start(workflow=deploy, vars={"service": "web"})
    assert rt.tick(workflow=deploy, run_id=run_id).waiting.wait_id == "w2"
    fresh = backend.reopen().runtime() if backend.reopen is not None else rt  # as another process would
    state = fresh.resume(workflow=deploy, run_id=run_id, wait_id="w2", payload={"answer": "yes"})
    assert state.status is RunStatus.COMPLETED
    assert state.output == {"image": {"image": "web:1"}, "answer": "yes", "stamped": True}
    assert CALLS == ["web"]
    kinds = [(r["kind"], r["status"]) for r in fresh.get_ledger(run_id)]
    assert ("step", "started") in kinds and ("step", "completed") in kinds


def test_a_divergence_on_every_backend_writes_nothing_and_marks_the_run(backend: Any) -> None:
    if "upstream-style" in backend.name:
        pytest.skip("code-first runs need a store that keeps sealed records (refused at start, above)")
    names = ["a", "b"]

    @workflow("cf_order")
    def order(ctx: Any) -> dict[str, Any]:
        for name in names:
            ctx.step(step(name=name)(lambda value=name: value))
        ctx.wait_event("go")
        return {}

    rt = backend.runtime()
    run_id = rt.start(workflow=order)
    rt.tick(workflow=order, run_id=run_id)
    names.reverse()
    before = backend.fingerprint(run_id)
    with pytest.raises(NondeterminismError):
        rt.resume(workflow=order, run_id=run_id, wait_id="w3", payload={})
    assert backend.fingerprint(run_id) == before
    assert rt.run_store.get_block(run_id)["position"] == 1


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Callable[[], Any]]:
    """``pg()`` → a PostgresStore on a schema of this test's own (each call: new connections)."""
    from abstractruntime.storage.postgres.store import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:16]}"
    opened: list[Any] = []

    def open_() -> Any:
        store = PostgresStore(postgres_url, schema=schema)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def test_block_marks_are_rows_and_runs_list_sees_them(pg: Callable[[], Any]) -> None:
    from abstractruntime.core.blocks import blocked_runs

    store = pg()
    rt = store.runtime()
    run_id = rt.start(workflow=deploy, vars={"service": "api"})
    rt.tick(workflow=deploy, run_id=run_id)
    head = rt.get_checkpoint(run_id).ledger
    store.runs.put_block(run_id, {"position": 1, "seq": head.seq, "head_hash": head.head_hash, "code_sha256": None})
    other = pg()  # another process
    assert other.runs.get_block(run_id)["position"] == 1
    assert list(blocked_runs(other.runs, other.ledger)) == [run_id]
    other.runtime().cancel_run(run_id)  # a record appended since: the mark no longer holds
    assert blocked_runs(other.runs, other.ledger) == {}
    other.runs.drop_block(run_id)
    assert other.runs.get_block(run_id) is None and other.runs.list_blocks() == {}


def test_the_schema_has_the_blocks_table(pg: Callable[[], Any]) -> None:
    from abstractruntime.storage.postgres.schema import MIGRATIONS, SCHEMA_VERSION

    store = pg()
    store.runs.list_blocks()  # opens (and migrates) the schema
    (blocks,) = [m for m in MIGRATIONS if any("TABLE {s}.blocks" in sql for sql in m[2])]
    assert SCHEMA_VERSION == MIGRATIONS[-1][0] >= blocks[0]


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """A fresh database of its own (the CLI uses the default schema)."""
    import psycopg

    name = f"db_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(postgres_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


FLOW = textwrap.dedent('''
    from abstractruntime import workflow

    def build(service):
        return {"image": service + ":1"}

    @workflow("pg_deploy")
    def deploy(ctx, service: str):
        image = ctx.step(build, service)
        if ctx.ask(f"Deploy {service}?", choices=["yes", "no"]) != "yes":
            return {"deployed": False}
        return {"deployed": True, "image": image, "paid": ctx.wait_event(f"payment:{service}")}
''')


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
    return subprocess.run([BIN, "--store", url, "--no-input", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=env)


def _tables(url: str) -> dict[str, list[Any]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {table: conn.execute(f"SELECT * FROM abstractruntime.{table} ORDER BY 1, 2").fetchall()
                for table in ("runs", "ledger", "secrets", "blocks", "leases")}


def test_the_cli_on_postgresql_runs_resumes_replays_and_blocks(database_url: str, tmp_path: Path) -> None:
    code = tmp_path / "flows" / "deploy.py"
    code.parent.mkdir()
    code.write_text(FLOW)
    url = database_url
    started = _cli(url, "run", str(code), "--var", "service=web", "--run-id", "p1")
    assert started.returncode == 5 and started.stdout.strip() == "p1@w2", started.stderr
    answered = _cli(url, "resume", "p1@w2", "--answer", "yes")
    assert answered.returncode == 5 and answered.stdout.strip() == "p1@w3", answered.stderr
    before = _tables(url)
    moved = FLOW.replace("    image = ctx.step(build, service)\n", "").replace(
        "        return {\"deployed\": False}\n", "        return {\"deployed\": False}\n    image = ctx.step(build, service)\n")
    assert moved != FLOW
    new = tmp_path / "new.py"
    new.write_text(moved)
    checked = _cli(url, "replay", "--workflow", str(new), "--all")
    assert checked.returncode == 6 and "at position 1: recorded step 'build', code ctx.ask()" in checked.stdout
    commented = tmp_path / "commented.py"
    commented.write_text("# comment\n" + FLOW)
    assert _cli(url, "replay", "--workflow", str(commented), "p1").returncode == 0
    assert _tables(url) == before  # replay wrote nothing to the database
    new.unlink()  # candidates checked: only the deployed file stays registered
    commented.unlink()
    code.write_text(moved)  # deployed anyway, with upgrades allowed: refused, and the run blocked
    blocked = _cli(url, "--upgrade", "emit", "payment:web", "--payload", "{}")
    assert "diverges from its history at position 1" in blocked.stderr
    assert "p1\twaiting (blocked)" in _cli(url, "runs", "list").stdout
    assert _tables(url)["ledger"] == before["ledger"]
    code.write_text("# comment\n" + FLOW)  # a compatible deploy
    done = _cli(url, "--upgrade", "emit", "payment:web", "--payload", '{"amount": 1}')
    assert done.returncode == 0, done.stderr
    shown = json.loads(_cli(url, "runs", "show", "p1", "--json").stdout)
    assert shown["run"]["output"] == {"deployed": True, "image": {"image": "web:1"}, "paid": {"amount": 1}}
    assert [r["kind"] for r in json.loads(_cli(url, "ledger", "show", "p1", "--json").stdout)].count("upgrade") == 1
    assert _cli(url, "verify", "p1").returncode == 0
