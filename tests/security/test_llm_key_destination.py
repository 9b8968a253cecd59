"""An API key goes only to the server the operator configured for it, never to one named by data.

Two real OpenAI-compatible servers listen on 127.0.0.1: the operator's and the attacker's. The
attacker, who can write the store, makes runs that record the attacker's server (or edits a
checkpoint to name it); the operator continues them with keys in the environment. Every
command is a real subprocess of the installed ``abstractruntime``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integrations"))

from openai_fixture import OpenAIFixture, Reply, chat_completion  # noqa: E402

CLI = str(Path(sys.executable).parent / "abstractruntime")
KEY = "sk-operator-secret-1234"
PROVIDER_KEY = "pk-operator-provider-5678"

ASK_THEN_LLM = '''
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec
workflow = WorkflowSpec("ask_llm", "ask", {
    "ask": lambda run, ctx: StepPlan("ask", next_node="think", effect=Effect(
        EffectType.ASK_USER, {"prompt": "Go?", "choices": ["yes", "no"], "allow_free_text": False}, "go")),
    "think": lambda run, ctx: StepPlan("think", next_node="done", effect=Effect(
        EffectType.LLM_CALL, {"prompt": "Say hello"}, "reply")),
    "done": lambda run, ctx: StepPlan("done", complete_output={"reply": run.vars["reply"]["content"]}),
})
'''

LLM_ONLY = ASK_THEN_LLM.replace('"ask_llm", "ask"', '"llm_only", "think"')

TIMER_THEN_LLM = '''
from datetime import datetime, timedelta, timezone
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

def wait(run, ctx):
    until = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat()
    return StepPlan("wait", next_node="think", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}, "t"))

workflow = WorkflowSpec("timer_llm", "wait", {
    "wait": wait,
    "think": lambda run, ctx: StepPlan("think", next_node="done", effect=Effect(
        EffectType.LLM_CALL, {"prompt": "Say hello"}, "reply")),
    "done": lambda run, ctx: StepPlan("done", complete_output={"reply": run.vars["reply"]["content"]}),
})
'''


class Setting:
    """The operator's server and environment, the attacker's server and environment."""

    def __init__(self, tmp_path: Path, good: OpenAIFixture, evil: OpenAIFixture) -> None:
        self.tmp, self.good, self.evil = tmp_path, good, evil
        self.store = tmp_path / "store"
        self.flows = tmp_path / "flows"
        self.flows.mkdir()
        for name, text in (("ask_llm.py", ASK_THEN_LLM), ("llm_only.py", LLM_ONLY), ("timer_llm.py", TIMER_THEN_LLM)):
            (self.flows / name).write_text(text)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_")}
        clean.update(NO_COLOR="1", ABSTRACTRUNTIME_STORE=str(self.store), ABSTRACTRUNTIME_WORKFLOWS=str(self.flows))
        self.attacker_env = dict(clean)
        self.operator_env = {**clean, "ABSTRACTRUNTIME_API_KEY": KEY, "ABSTRACTRUNTIME_PROVIDER_API_KEY": PROVIDER_KEY,
                             "ABSTRACTRUNTIME_SERVER": good.base_url}

    def cli(self, *args: str, attacker: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
        base = self.attacker_env if attacker else self.operator_env
        full = {k: v for k, v in {**base, **env}.items() if v != ""}
        return subprocess.run([CLI, "--no-input", *args], capture_output=True, text=True, timeout=120, env=full,
                              cwd=self.tmp, stdin=subprocess.DEVNULL)

    def attacker_run(self, name: str, run_id: str) -> subprocess.CompletedProcess[str]:
        return self.cli("run", str(self.flows / name), "--run-id", run_id, "--llm", "remote", "--model", "m",
                        "--server", self.evil.base_url, attacker=True)

    def key_reached(self, server: OpenAIFixture) -> bool:
        return any(KEY in value or PROVIDER_KEY in value for req in server.requests for value in req.headers.values())


@pytest.fixture
def setting(tmp_path: Path) -> Iterator[Setting]:
    with OpenAIFixture() as good, OpenAIFixture() as evil:
        yield Setting(tmp_path, good, evil)


def _one_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_resume_refuses_a_recorded_server_other_than_the_configured_one(setting: Setting) -> None:
    started = setting.attacker_run("ask_llm.py", "a1")
    assert started.returncode == 5, started.stderr
    r = setting.cli("resume", "a1@w1", "--answer", "yes")
    assert r.returncode == 2, r.stderr
    line = _one_error(r.stderr)
    assert setting.evil.base_url in line and setting.good.base_url in line
    # No server configured at all: the recorded one is still refused, and named.
    r = setting.cli("resume", "a1@w1", "--answer", "yes", ABSTRACTRUNTIME_SERVER="")
    assert r.returncode == 2, r.stderr
    assert setting.evil.base_url in _one_error(r.stderr)
    assert not setting.evil.requests and not setting.good.requests


def test_retry_tick_and_worker_never_send_the_key_to_a_recorded_server(setting: Setting) -> None:
    busy = Reply(status=503, body={"error": {"message": "busy"}})
    setting.evil.script(busy, busy, busy)
    failed = setting.attacker_run("llm_only.py", "f1")
    assert failed.returncode == 1, failed.stderr
    timed = setting.attacker_run("timer_llm.py", "t1")
    assert timed.returncode == 5, timed.stderr
    time.sleep(1.2)  # the timer is due
    for args in (("retry", "f1"), ("tick", "t1"), ("tick", "--due"), ("worker", "--once")):
        r = setting.cli(*args)
        # A pass over many runs (tick --due, worker --once) names each run it cannot advance and
        # exits 1; a command on one run exits 2.
        assert r.returncode == (1 if args[1] in ("--due", "--once") else 2), (args, r.stderr)
        assert "error: " in r.stderr and setting.evil.base_url in r.stderr, (args, r.stderr)
    assert not setting.key_reached(setting.evil)
    assert not setting.good.requests


def test_an_edited_checkpoint_never_sends_the_key_elsewhere(setting: Setting) -> None:
    # The operator names the server on the command line (not in the environment) when starting.
    started = setting.cli("run", str(setting.flows / "ask_llm.py"), "--run-id", "c1", "--llm", "remote",
                          "--model", "m", "--server", setting.good.base_url, ABSTRACTRUNTIME_SERVER="")
    assert started.returncode == 5, started.stderr
    ckpt = setting.store / "runs" / "c1" / "run.json"
    doc = json.loads(ckpt.read_text())
    metadata = doc["state"]["kernel"]["metadata"]
    assert metadata["llm"]["server"] == setting.good.base_url
    metadata["llm"]["server"] = setting.evil.base_url  # the checkpoint no longer proves: it is ignored
    ckpt.write_text(json.dumps(doc))
    setting.good.script(chat_completion(content="hello"))
    setting.evil.script(chat_completion(content="pwned"))
    r = setting.cli("resume", "c1@w1", "--answer", "yes", ABSTRACTRUNTIME_SERVER="")
    # Refused: the key goes to no server named by the run, edited or not (with no server
    # configured, even the one the run recorded honestly is refused).
    assert r.returncode == 2, r.stderr
    assert not setting.evil.requests and not setting.good.requests
    r = setting.cli("resume", "c1@w1", "--answer", "yes")   # the operator's configured server
    assert not setting.key_reached(setting.evil)


def test_the_operator_moves_a_run_by_naming_the_server_on_the_command_line(setting: Setting) -> None:
    started = setting.attacker_run("ask_llm.py", "m1")
    assert started.returncode == 5, started.stderr
    setting.good.script(chat_completion(content="hello"))
    r = setting.cli("resume", "m1@w1", "--answer", "yes", "--server", setting.good.base_url, "--json",
                    ABSTRACTRUNTIME_SERVER="")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["output"] == {"reply": "hello"}
    assert setting.key_reached(setting.good) and not setting.evil.requests
    shown = json.loads(setting.cli("runs", "show", "m1", "--json").stdout)
    assert shown["metadata"]["llm"]["server"] == setting.good.base_url


def test_without_a_key_the_recorded_server_is_used(setting: Setting) -> None:
    started = setting.attacker_run("ask_llm.py", "k1")
    assert started.returncode == 5, started.stderr
    setting.evil.script(chat_completion(content="keyless"))
    r = setting.cli("resume", "k1@w1", "--answer", "yes", "--json", ABSTRACTRUNTIME_API_KEY="",
                    ABSTRACTRUNTIME_PROVIDER_API_KEY="", ABSTRACTRUNTIME_SERVER="")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["output"] == {"reply": "keyless"}
    assert setting.evil.requests and not setting.key_reached(setting.evil)


GOOD, EVIL = "http://good.example", "http://evil.example"
RECORDED = {"mode": "remote", "model": "m", "server": EVIL, "provider": None, "base_url": None}


@pytest.mark.parametrize(("flags", "environ", "refused"), [
    (None, {"ABSTRACTRUNTIME_API_KEY": KEY, "ABSTRACTRUNTIME_SERVER": GOOD}, True),       # recorded ≠ configured
    (None, {"ABSTRACTRUNTIME_PROVIDER_API_KEY": KEY}, True),                               # no server configured
    (None, {"ABSTRACTRUNTIME_API_KEY": KEY, "ABSTRACTRUNTIME_SERVER": EVIL}, False),       # the operator's own choice
    (None, {}, False),                                                                       # no key: nothing to leak
    ({"server": GOOD, "typed": {"server"}}, {"ABSTRACTRUNTIME_API_KEY": KEY}, False),      # typed: moves the run
    ({"server": GOOD}, {"ABSTRACTRUNTIME_API_KEY": KEY, "ABSTRACTRUNTIME_SERVER": GOOD}, True),  # from the env only
    ({"mode": "hybrid", "model": "m", "server": GOOD}, {"ABSTRACTRUNTIME_API_KEY": KEY, "ABSTRACTRUNTIME_SERVER": GOOD},
     False),                                                                                 # a new mode starts afresh
])
def test_the_rule_as_a_function(flags: dict | None, environ: dict[str, str], refused: bool) -> None:
    from abstractruntime.llm_config import LlmFlags, check_key_destination, resolve_llm
    from abstractruntime.core.errors import ServerNotConfiguredError

    given = None
    if flags is not None:
        typed = frozenset(flags.pop("typed", ()))
        given = LlmFlags(**flags, typed=typed)
    config, _ = resolve_llm(given, RECORDED)
    if refused:
        with pytest.raises(ServerNotConfiguredError) as info:
            check_key_destination(config, given, RECORDED, "r1", environ=environ)
        assert EVIL in str(info.value) and info.value.code == "server_not_configured"
    else:
        check_key_destination(config, given, RECORDED, "r1", environ=environ)
