"""LLM runs from the command line, across processes, against the loopback OpenAI-compatible server.

Every command is a subprocess of the installed script. The server answers from the request
(``"<step> done: <words>"``, with usage it reports) and counts what it receives, so "nothing
ran twice" is counted on the server, not assumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from openai_fixture import OpenAIFixture, Reply, chat_completion

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples" / "llm"
BRIEF = EXAMPLES / "brief.py"
BIN = Path(sys.executable).parent / "abstractruntime"
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def prompt_of(body: Any) -> str:
    return str(body.get("messages", [{}])[-1].get("content", "")) if isinstance(body, dict) else ""


def step_reply(body: Any) -> Reply:
    """``"<Step> done: <words>"`` with the same usage for every call (10 in, 5 out)."""
    prompt = prompt_of(body)
    step = prompt.split(":", 1)[0]
    return Reply(body=chat_completion(content=f"{step.capitalize()} done: " + prompt.split(":", 1)[-1].strip()[:30],
                                      usage=dict(USAGE)))


class Env:
    """The store, the environment and the command runner of one test."""

    def __init__(self, tmp_path: Path, server: OpenAIFixture, store: Optional[str] = None) -> None:
        self.tmp = tmp_path
        self.server = server
        self.store = store or str(tmp_path / "store")
        base = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_")}
        self.env = {**base, "ABSTRACTRUNTIME_STORE": self.store, "ABSTRACTRUNTIME_NO_INPUT": "1",
                    "ABSTRACTRUNTIME_WORKFLOWS": str(EXAMPLES), "HOME": str(tmp_path), "NO_COLOR": "1"}

    def llm(self, model: str = "fake/brief") -> list[str]:
        return ["--llm", "remote", "--server", self.server.base_url, "--model", model]

    def __call__(self, *args: str, env: Optional[dict[str, str]] = None, timeout: float = 60) -> Result:
        proc = subprocess.run([str(BIN), *args], capture_output=True, text=True, env={**self.env, **(env or {})},
                              cwd=self.tmp, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, env: Optional[dict[str, str]] = None) -> subprocess.Popen[str]:
        return subprocess.Popen([str(BIN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**self.env, **(env or {})}, cwd=self.tmp)

    def prompts(self) -> list[str]:
        return [prompt_of(r.body) for r in self.server.chat_requests()]

    def ledger(self, run_id: str) -> list[dict[str, Any]]:
        result = self("ledger", "show", run_id, "--json")
        assert result.code == 0, result.err
        return list(result.json())


@pytest.fixture
def ar(tmp_path: Path, openai_server: OpenAIFixture) -> Env:
    openai_server.responder = step_reply
    return Env(tmp_path, openai_server)


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """A fresh database of its own on the session's throwaway cluster (the CLI uses its default schema)."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"llm_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(postgres_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_budget_pauses_the_run_and_another_process_raises_it(ar: Env) -> None:
    r = ar("run", str(BRIEF), *ar.llm(), "--run-id", "b1", "--budget", "tokens=20", "--json")
    assert r.code == 5, r.err
    state = r.json()
    # outline (15 tokens) then draft (30: over 20) ran; the run paused right after the draft.
    assert state["wait_handle"] == "b1@w3" and state["waiting"]["reason"] == "budget"
    assert state["waiting"]["details"]["reached"] == ["tokens"]
    assert ar.prompts() == ["outline: durable agents", "draft: Outline done: durable agents"]

    shown = ar("runs", "show", "b1", "--json").json()
    assert shown["usage"]["tokens"] == 30 and shown["usage"]["budget"] == {"tokens": 20}
    too_little = ar("resume", "b1@w3", "--raise-budget", "tokens=+5")
    assert too_little.code == 2 and "still reached" in too_little.err

    r = ar("resume", "b1@w3", "--raise-budget", "tokens=+100", *ar.llm(), "--json")
    assert r.code == 0, r.err
    assert r.json()["status"] == "completed"
    assert ar.prompts() == ["outline: durable agents", "draft: Outline done: durable agents",
                            "tighten: Draft done: Outline done: durable agents"]  # each call exactly once
    again = ar("resume", "b1@w3", "--raise-budget", "tokens=+100")
    assert again.code == 1 and "already answered" in again.err

    decisions = [rec for rec in ar.ledger("b1") if rec["kind"] == "resume"]
    assert len(decisions) == 1 and decisions[0]["result"]["decision"] == "raise"
    assert decisions[0]["result"]["budget"] == {"tokens": 120}
    usage = ar("usage", "b1", "--json").json()
    assert usage["total"]["tokens"] == 45 == 3 * USAGE["total_tokens"]  # the server's own numbers
    assert usage["total"]["input_tokens"] == 30 and usage["total"]["output_tokens"] == 15
    listed = {d["run_id"]: d for d in ar("runs", "list", "--json").json()}
    assert listed["b1"]["usage"]["calls"] == 3 and listed["b1"]["usage"]["budget"] == {"tokens": 120}
    assert ar("verify", "b1").code == 0


def test_stop_ends_a_run_at_its_budget(ar: Env) -> None:
    # (with tracing on: without an SDK configured the spans go nowhere, and the run is the same)
    r = ar("run", str(BRIEF), *ar.llm(), "--run-id", "s1", "--budget", "calls=1", env={"ABSTRACTRUNTIME_OTEL": "1"})
    assert r.code == 5 and r.out.strip() == "s1@w3", r.err  # call 2 was not started (w3: its pause)
    assert "raise with: abstractruntime resume s1@w3 --raise-budget calls=+N" in r.err
    assert len(ar.prompts()) == 1
    r = ar("resume", "s1@w3", "--answer", "stop", "--json")
    assert r.code == 1 and r.json()["status"] == "cancelled"
    assert "stopped at its budget" in r.json()["error"]
    assert len(ar.prompts()) == 1 and ar("verify", "s1").code == 0


def test_nothing_runs_twice_across_a_pause_when_processes_are_killed(ar: Env) -> None:
    arrived = threading.Event()

    def slow_tighten(body: Any) -> Reply:
        reply = step_reply(body)
        if prompt_of(body).startswith("tighten"):
            arrived.set()
            reply.delay_s = 30.0  # the process answering it is killed first
        return reply

    ar.server.responder = slow_tighten
    assert ar("run", str(BRIEF), *ar.llm(), "--run-id", "k1", "--budget", "tokens=20").code == 5
    proc = ar.popen("resume", "k1@w3", "--raise-budget", "tokens=+100", *ar.llm())
    try:
        assert arrived.wait(30), "the resumed run never called the server"
        os.kill(proc.pid, signal.SIGKILL)  # killed inside the call that follows the decision
    finally:
        proc.wait(10)
    ledger = ar.ledger("k1")
    assert [r["kind"] for r in ledger if r["kind"] == "resume"] == ["resume"]  # the decision is durable
    assert ledger[-1]["kind"] == "effect" and ledger[-1]["status"] == "started"  # the call's intent, no outcome
    # A retried answer is refused: the decision was taken once.
    assert ar("resume", "k1@w3", "--raise-budget", "tokens=+100", *ar.llm()).code == 1
    ar.server.responder = step_reply
    r = ar("tick", "k1", "--json")
    assert r.code == 0 and r.json()["status"] == "completed", r.err
    prompts = ar.prompts()
    assert prompts.count("outline: durable agents") == 1
    assert prompts.count("draft: Outline done: durable agents") == 1
    # The interrupted call is the one documented at-least-once window: sent again, recorded once.
    assert len([p for p in prompts if p.startswith("tighten")]) == 2
    ledger = ar.ledger("k1")
    assert len([r for r in ledger if r["kind"] == "effect" and r["status"] == "completed"]) == 3
    assert len([r for r in ledger if r["kind"] == "pause"]) == 1
    assert ar("usage", "k1", "--json").json()["total"]["calls"] == 3
    assert ar("verify", "k1").code == 0


def test_a_kill_inside_the_crossing_call_still_pauses_once(ar: Env) -> None:
    arrived = threading.Event()
    seen: list[str] = []

    def slow_draft(body: Any) -> Reply:
        reply = step_reply(body)
        seen.append(prompt_of(body))
        if prompt_of(body).startswith("draft") and seen.count(prompt_of(body)) == 1:
            arrived.set()
            reply.delay_s = 30.0
        return reply

    ar.server.responder = slow_draft
    proc = ar.popen("run", str(BRIEF), *ar.llm(), "--run-id", "k2", "--budget", "tokens=20")
    try:
        assert arrived.wait(30)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    r = ar("tick", "k2", "--json")
    assert r.code == 5 and r.json()["waiting"]["reason"] == "budget", r.err
    assert seen.count("outline: durable agents") == 1 and len([p for p in seen if p.startswith("draft")]) == 2
    assert len([rec for rec in ar.ledger("k2") if rec["kind"] == "pause"]) == 1
    handle = r.json()["wait_handle"]
    assert ar("resume", handle, "--raise-budget", "tokens=+100").code == 0
    assert len([p for p in seen if p.startswith("tighten")]) == 1
    assert ar("verify", "k2").code == 0


def test_a_429_with_retry_after_is_a_timer_a_worker_picks_up(ar: Env) -> None:
    ar.server.script(Reply(status=429, headers={"Retry-After": "2"}, body={"error": {"message": "slow down"}}))
    r = ar("run", str(BRIEF), *ar.llm(), "--run-id", "t1")
    assert r.code == 5 and r.out.strip() == "t1@w2", r.err
    assert "waiting out a rate limit, not a failed attempt" in r.err
    waiting = ar("runs", "show", "t1", "--json").json()["run"]["waiting"]
    assert waiting["reason"] == "until" and waiting["details"]["retry_after"]["seconds"] == 2
    # The process exited; a worker resumes the run once the timer is due (not before).
    from datetime import datetime, timezone

    left = (datetime.fromisoformat(waiting["until"]) - datetime.now(timezone.utc)).total_seconds()
    if left > 1.0:  # a loaded machine may have used up the two seconds already
        early = ar("worker", "--once")
        assert early.code == 0 and "t1" not in early.out
    time.sleep(max(0.0, (datetime.fromisoformat(waiting["until"]) - datetime.now(timezone.utc)).total_seconds()))
    done = ar("worker", "--once")
    assert done.code == 0 and "t1\tcompleted" in done.out, done.err
    ledger = ar.ledger("t1")
    assert not [rec for rec in ledger if rec["status"] == "failed"]  # a timer, not a failed attempt
    assert len(ar.prompts()) == 4  # the refused call, then the three calls once each


def start_runs(ar: Env, run_ids: list[str]) -> None:
    """Create runs of the brief (running, not advanced) with their LLM configuration recorded, as
    `run` records it, in a process of their own."""
    llm = {"mode": "remote", "provider": None, "model": "fake/brief", "server": ar.server.base_url, "base_url": None}
    code = (
        "from abstractruntime.storage.store import open_store\n"
        "from abstractruntime.loader import load_workflow_file\n"
        f"store = open_store({ar.store!r})\n"
        f"wf = load_workflow_file({str(BRIEF)!r}).workflow\n"
        f"for run_id in {run_ids!r}:\n"
        f"    store.runtime().start(workflow=wf, run_id=run_id, vars={{'topic': 'topic ' + run_id}}, "
        f"metadata={{'llm': {llm!r}}})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=ar.env, cwd=ar.tmp, timeout=60)


def _fleet(ar: Env, store_arg: list[str], runs: int = 8) -> None:
    """Start ``runs`` brief runs, serve them with 4 workers limited to 2 LLM calls in flight, check the server."""
    limited = Reply(status=429, headers={"Retry-After": "1"}, body={"error": {"message": "slow down"}})
    ar.server.script(limited, limited, limited)

    def slow(body: Any) -> Reply:
        reply = step_reply(body)
        reply.delay_s = 0.15
        return reply

    ar.server.responder = slow
    start_runs(ar, [f"f{i}" for i in range(runs)])
    workers = [ar.popen(*store_arg, "--max-in-flight", "llm:fake=2", "worker", "--interval", "0.1")
               for _ in range(4)]
    try:
        def all_done() -> bool:
            listed = ar("runs", "list", "--json", "--status", "completed")
            return listed.code == 0 and len(listed.json()) == runs

        wait_until(all_done, timeout=90, what="every run to complete")
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=30) for proc in workers]
    assert all(proc.returncode == 0 for proc in workers), outputs
    assert ar.server.max_in_flight <= 2, ar.server.max_in_flight
    assert ar.server.max_in_flight == 2  # the limit was reached, so it was what held the fleet back
    served = [p for p in ar.prompts()]
    assert len(served) == 3 * runs + 3  # every call once, plus the three answered 429
    for i in range(runs):
        assert not [rec for rec in ar.ledger(f"f{i}") if rec["status"] == "failed"]
    assert sum(1 for out, _ in outputs for line in out.splitlines() if line.endswith("\tcompleted")) == runs


def test_four_workers_with_a_limit_of_two_never_have_more_than_two_calls_in_flight(ar: Env) -> None:
    _fleet(ar, [])


def test_the_limit_holds_across_a_postgresql_fleet(tmp_path: Path, openai_server: OpenAIFixture,
                                                  database_url: str) -> None:
    openai_server.responder = step_reply
    env = Env(tmp_path, openai_server, store=database_url)
    _fleet(env, [])


def test_watch_follows_a_streaming_run_and_exits_with_its_code(ar: Env) -> None:
    def slow_words(body: Any) -> Reply:
        reply = step_reply(body)
        reply.token_delay_s = 0.05
        return reply

    ar.server.responder = slow_words
    start_runs(ar, ["w1"])  # running, and nobody advances it yet
    watcher = ar.popen("watch", "w1", "--interval", "0.05")
    assert watcher.stdout is not None
    first = watcher.stdout.readline()  # the records so far: the watcher follows from here on
    assert first.startswith("1\tstart")
    r = ar("--stream", "tick", "w1")
    assert r.code == 0, r.err
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert "Outline done: topic w1" in out
    assert "llm_call in flight (effect 1, attempt 1)" in out
    # The reply streamed word by word while the call was in flight, before its outcome record.
    streamed = out.index("Outline done: topic w1")
    assert streamed < out.index("effect\tcompleted\toutline")
    assert "run w1 completed" in err
    again = ar("watch", "w1", "--last", "0")
    assert again.code == 0 and "run w1 completed" in again.err
    # The pieces went by the side channel: the ledger holds the whole reply only.
    assert (Path(ar.store) / "runs" / "w1" / "live.jsonl").exists()
    assert '"text":"Outline' not in (Path(ar.store) / "runs" / "w1" / "ledger.jsonl").read_text()


def test_watch_a_waiting_run_exits_5_with_its_handle(ar: Env) -> None:
    assert ar("run", str(BRIEF), *ar.llm(), "--run-id", "w2", "--budget", "calls=1").code == 5
    r = ar("watch", "w2", "--last", "3")
    assert r.code == 5 and r.out.strip().splitlines()[-1] == "w2@w3"
    assert "paused (budget)" in r.out
    assert ar("watch", "nope").code == 4
    assert ar("usage", "nope").code == 4
    assert ar("usage").code == 2 and ar("usage", "w2", "--by", "color").code == 2


def test_watch_on_postgresql_is_woken_by_notify(tmp_path: Path, openai_server: OpenAIFixture,
                                               database_url: str) -> None:
    def slow_words(body: Any) -> Reply:
        reply = step_reply(body)
        reply.token_delay_s = 0.05
        return reply

    openai_server.responder = slow_words
    ar = Env(tmp_path, openai_server, store=database_url)
    start_runs(ar, ["p1"])
    watcher = ar.popen("watch", "p1", "--interval", "5")  # a slow poll: NOTIFY must wake it
    assert watcher.stdout is not None and watcher.stdout.readline().startswith("1\tstart")
    started = time.monotonic()
    assert ar("--stream", "tick", "p1").code == 0
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert time.monotonic() - started < 4.5
    assert "Tighten done:" in out and out.index("Outline done:") < out.index("effect\tcompleted\toutline")


def test_the_report_shows_what_a_run_spent(ar: Env) -> None:
    assert ar("--prices", str(EXAMPLES / "prices.toml"), "run", str(BRIEF), *ar.llm("scripted/brief"),
              "--run-id", "r1").code == 0
    r = ar("report", "r1", "-o", "-")
    assert r.code == 0, r.err
    assert "3 calls" in r.out and "45 tokens" in r.out
    shown = ar("runs", "show", "r1")
    fields = dict(line.split("\t", 1) for line in shown.out.splitlines() if "\t" in line)
    assert fields["usage"] == "3 calls, 45 tokens (30 in, 15 out), cost 0.000315"  # 30 x 3.00 + 15 x 15.00 per million
    assert ar("--prices", str(ar.tmp / "missing.toml"), "runs", "list").code == 2
