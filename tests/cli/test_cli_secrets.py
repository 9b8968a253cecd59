"""The command never prints a secret from an error: not on stderr, not in ``--json``, not with ``-v``.

Node exceptions, effect failures, workflow files that fail to import, store URLs with a
password and usage errors that echo an argument, each through the installed command; every
stream is scanned for every real value (docs/redaction.md, "Where a secret can appear").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq0S3CRETPEMBODY\n-----END RSA PRIVATE KEY-----"
# Each real value, and the text that carries it into an error message.
SECRETS = {
    "PW-S3CRET-url": "connect postgresql://app:PW-S3CRET-url@db.internal/app failed",
    "sk-proj-S3CRETabc123def456ghi789": "api_key=sk-proj-S3CRETabc123def456ghi789 refused",
    "ghp_S3CRETabcdefghijklmnopqrstuvwxyz0123": "with token ghp_S3CRETabcdefghijklmnopqrstuvwxyz0123",
    "S3CRETbearer0123456789": "sent Authorization: Bearer S3CRETbearer0123456789",
    "S3CRETpemBODY": PEM.replace("S3CRETPEMBODY", "S3CRETpemBODY"),
    "hunter2-S3CRET": "{'password': 'hunter2-S3CRET', 'user': 'ann'}",
    "S3CRET-curl": "curl -u ann:S3CRET-curl https://api.example.com",
}
MESSAGE = "; ".join(SECRETS.values())

NODE_RAISES = f'''
from abstractruntime import StepPlan, WorkflowSpec

def boom(run, ctx):
    raise RuntimeError({MESSAGE!r})

workflow = WorkflowSpec("node-raises", "boom", {{"boom": boom}})
'''

EFFECT_FAILS = f'''
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec
from abstractruntime.core.effects import EffectOutcome

def call(run, ctx):
    return StepPlan("call", next_node="done", effect=Effect(EffectType.WAIT_JOB, {{"job_id": "j1"}}, result_key="r"))

def done(run, ctx):
    return StepPlan("done", complete_output={{"ok": True}})

def fail(run, effect, default_next=None):
    return EffectOutcome.failed({MESSAGE!r})

workflow = WorkflowSpec("effect-fails", "call", {{"call": call, "done": done}})
effect_handlers = {{EffectType.WAIT_JOB: fail}}
'''

IMPORT_FAILS = f'''
raise RuntimeError({MESSAGE!r})
'''


def leaked(*texts: str) -> list[str]:
    """The real values found in ``texts`` (any part of the PEM body counts)."""
    blob = "\n".join(texts)
    return [s for s in SECRETS if s in blob]


@pytest.mark.parametrize("source", [NODE_RAISES, EFFECT_FAILS], ids=["node-exception", "effect-failure"])
def test_a_failed_run_prints_no_secret(sh, tmp_path: Path, source: str) -> None:
    workflow = tmp_path / "wf.py"
    workflow.write_text(source)
    plain = sh("run", str(workflow), "--run-id", "r1")
    assert plain.exit_code == 1, plain.stderr
    assert "failed" in plain.stderr and "[REDACTED]" in plain.stderr
    as_json = sh("--json", "run", str(workflow), "--run-id", "r2")
    assert as_json.exit_code == 1
    doc = json.loads(as_json.stdout)
    assert doc["status"] == "failed" and "[REDACTED]" in doc["error"]
    verbose = sh("-v", "run", str(workflow), "--run-id", "r3")
    shown = [sh("runs", "show", "r1"), sh("runs", "show", "r1", "--json"), sh("ledger", "show", "r1"),
             sh("ledger", "show", "r1", "--json"), sh("ledger", "show", "r1", "--jsonl"), sh("runs", "list", "--json")]
    streams = [plain.stdout, plain.stderr, as_json.stdout, as_json.stderr, verbose.stdout, verbose.stderr]
    streams += [r.stdout + r.stderr for r in shown]
    assert leaked(*streams) == []
    # What the message was about stays readable.
    assert "postgresql://app:[REDACTED]@db.internal/app" in plain.stderr


def test_a_workflow_file_that_fails_to_import_prints_no_secret(sh, tmp_path: Path) -> None:
    workflow = tmp_path / "wf.py"
    workflow.write_text(IMPORT_FAILS)
    results = [sh("run", str(workflow)), sh("--json", "run", str(workflow)), sh("-v", "run", str(workflow))]
    assert [r.exit_code for r in results] == [1, 1, 1]
    assert all("error:" in r.stderr for r in results)
    assert json.loads(results[1].stdout)["error"]["code"] == "workflow_load"
    assert "Traceback" in results[2].stderr  # -v still shows where it happened
    assert leaked(*(r.stdout + r.stderr for r in results)) == []


# Passwords libpq cannot parse, so its own message quotes them (or a piece of them).
STORE_URLS = {
    "plain": ("postgresql://app:S3CRET-pg-plain@127.0.0.1:1/x", ["S3CRET-pg-plain"]),
    "slash": ("postgresql://app:pa/S3CRET-pg-slash@127.0.0.1:1/x", ["pa/S3CRET-pg-slash", "S3CRET-pg-slash"]),
    "space": ("postgresql://app:a S3CRET-pg-space@127.0.0.1:1/x", ["S3CRET-pg-space"]),
    "at": ("postgresql://app:p@S3CRET-pg-at@127.0.0.1:1/x", ["S3CRET-pg-at"]),
    "query": ("postgresql://app@127.0.0.1:1/x?password=S3CRET-pg-query", ["S3CRET-pg-query"]),
}


@pytest.mark.parametrize("name", list(STORE_URLS))
def test_store_url_passwords_are_never_echoed(sh, name: str) -> None:
    url, secrets = STORE_URLS[name]
    results = [sh("--store", url, "runs", "list"), sh("--json", "--store", url, "runs", "list"),
               sh("runs", "list", "--json", env={"ABSTRACTRUNTIME_STORE": url}),
               sh("-v", "--store", url, "runs", "show", "r1")]
    for r in results:
        assert r.exit_code != 0 and "error:" in r.stderr
        text = r.stdout + r.stderr
        assert [s for s in secrets if s in text] == [], text
    # The message says what to fix (a malformed URL is refused before anything connects).
    assert "127.0.0.1" in results[0].stderr or "percent-encode" in results[0].stderr


def test_usage_errors_do_not_echo_a_secret(sh) -> None:
    url = "postgresql://app:S3CRET-usage@db/x"
    for args in (("runs", "list", url), ("--json", "runs", "list", url), ("runs", "list", "--api-key=sk-proj-S3CRETabc123def456ghi789"),
                 ("--bogus", "Bearer S3CRETbearer0123456789")):
        r = sh(*args)
        assert r.exit_code == 2, r.stderr
        text = r.stdout + r.stderr
        assert "S3CRET" not in text, text


def test_redact_error_is_the_public_rule(tmp_path: Path) -> None:
    from abstractruntime.core.redaction import NoRedaction, Redactor

    redactor = Redactor()
    text = redactor.redact_error(RuntimeError(MESSAGE))
    assert leaked(text) == [] and "refused" in text and "api_key=[REDACTED]" in text
    assert redactor.redact_error(MESSAGE) == text
    # Values the caller knows are secret go wherever they appear, whatever their shape.
    assert redactor.redact_error('bad value "a b c d" for host', known=["a b c d", "ab"]) == \
        'bad value "[REDACTED]" for host'
    assert NoRedaction().redact_error(MESSAGE) == MESSAGE
    assert NoRedaction().redact_text(MESSAGE) == MESSAGE and NoRedaction().secrets_in(MESSAGE) == []
    assert redactor.secrets_in("postgresql://user:p@ss@host/db and api_key=abc123") == ["p@ss", "abc123"]


DECLARES_RULES = '''
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

redact_patterns = [r"ACCT-\\d{6,}"]

def ask(run, ctx):
    return StepPlan("ask", next_node="boom", effect=Effect(EffectType.ASK_USER, {"prompt": "go?"}, result_key="a"))

def boom(run, ctx):
    raise RuntimeError("account ACCT-123456 is locked")

workflow = WorkflowSpec("declares-rules", "ask", {"ask": ask, "boom": boom})
'''


def test_a_workflow_s_own_rules_apply_to_the_errors_printed(sh, tmp_path: Path) -> None:
    workflow = tmp_path / "wf.py"
    workflow.write_text(DECLARES_RULES)
    handles = [sh("--no-input", "run", str(workflow), "--run-id", run_id).stdout.strip() for run_id in ("r1", "r2")]
    resumed = [sh("--json", "resume", handles[0], "--answer", "yes"), sh("resume", handles[1], "--answer", "yes")]
    assert [r.exit_code for r in resumed] == [1, 1]
    text = "".join(r.stdout + r.stderr for r in resumed)
    assert "ACCT-123456" not in text, text
    assert "account [REDACTED] is locked" in json.loads(resumed[0].stdout)["error"]
    assert "account [REDACTED] is locked" in resumed[1].stderr
