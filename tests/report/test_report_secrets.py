"""``abstractruntime report`` is built from redacted values only, and written 0600.

One run carries secrets of many kinds through its variables (start variables, ones a node
sets, a key the workflow declares secret), an effect's payload, its result, a retried
effect's error, an answer and the run's final error; every real value holds ``S3CRET``, so
scanning the bytes of each page the command writes (one run, ``--at`` every seq, ``--all``,
stdout, ``--json``) for that marker finds any of them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from report_support import BIN

MARK = "S3CRET"
PEM = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAS3CRETpemBODY0123456789\n"
       "-----END OPENSSH PRIVATE KEY-----")
START_VARS = {
    "api_key": "sk-live-S3CRETstartKey0123456789abcdef",
    "db_url": "postgresql://app:S3CRETdbPW@db.internal:5432/app",
    "db_pass": "S3CRETdbPass",
    "userPin": "S3CRETpin",
    "iban": "DE89S3CRETiban3704004405320130",   # secret only because the workflow says so
    "deploy": {"key": PEM, "headers": [["Authorization", "Bearer S3CRETheaderBearer01"]]},
    "notes": ["curl -u ann:S3CRETcurlPW https://api.example.com", "Authorization: Token S3CRETtoken0123456789abcd",
              "post to https://hooks.slack.com/services/T0123/B0456/S3CRETslackHook0123"],
    "plain": "visible value",
}
RECORDED_ERROR = ("upstream 401: Authorization: Bearer S3CRETerrBearer01 at postgresql://app:S3CRETerrPW@db/app "
                  "ghp_S3CRETabcdefghijklmnopqrstuvwxyz012345")
FINAL_ERROR = "giving up: api_key=sk-proj-S3CRETfinal0123456789abc and password='S3CRETfinalPW'"


def secret_run(root: Path, run_id: str = "secrets") -> str:
    from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec, open_store
    from abstractruntime.core.policy import RetryPolicy
    from abstractruntime.core.redaction import Redactor

    attempts = {"n": 0}

    def fetch(run: Any, ctx: Any) -> Any:
        run.vars["session_token"] = "S3CRETnodeSetToken"
        return StepPlan("fetch", next_node="ask", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": [{
            "name": "http_get", "call_id": "c1", "arguments": {
                "url": "https://svc:S3CRETpayloadPW@api.example.com/v1/items",
                "headers": {"Authorization": "Bearer S3CRETpayloadBearer1", "Accept": "json"},
                "key_file": PEM}}]}, result_key="fetched"))

    def tools(run: Any, effect: Any, default_next: Any = None) -> Any:
        attempts["n"] += 1
        if attempts["n"] == 1:
            return EffectOutcome.failed(RECORDED_ERROR, retryable=True)
        return EffectOutcome.completed({"mode": "executed", "results": [{
            "call_id": "c1", "success": True, "error": None,
            "output": {"access_token": "S3CRETresultAccess", "log": "token=S3CRETresultLog ok",
                       "refresh": "xoxb-123456789012-S3CRETslackBot"}}]})

    def ask(run: Any, ctx: Any) -> Any:
        return StepPlan("ask", next_node="fail", effect=Effect(EffectType.ASK_USER, {"prompt": "Go on?"},
                                                               result_key="reply"))

    def fail(run: Any, ctx: Any) -> Any:
        raise RuntimeError(FINAL_ERROR)

    workflow = WorkflowSpec("secrets", entry_node="fetch", nodes={"fetch": fetch, "ask": ask, "fail": fail})
    store = open_store(root)
    runtime = store.runtime(effect_handlers={EffectType.TOOL_CALLS: tools}, redactor=Redactor(extra_keys=["iban"]),
                            effect_policy=RetryPolicy(backoff_base=0.0, backoff_max=0.0))
    runtime.start(workflow=workflow, run_id=run_id, vars=START_VARS)
    state = runtime.tick(workflow=workflow, run_id=run_id)
    assert state.status.value == "waiting", state.error
    # While the run is unfinished its real values are kept beside it (the test's premise, below).
    (root.parent / "secrets-while-waiting").write_bytes((root / "runs" / run_id / "secrets.jsonl").read_bytes())
    state = runtime.resume(workflow=workflow, run_id=run_id, wait_key=state.waiting.wait_key,
                           payload={"answer": "yes, password=S3CRETanswerPW"})
    # Error text is redacted before it is recorded: even the live state never holds the secret.
    assert state.status.value == "failed" and MARK not in (state.error or "") and "[REDACTED]" in state.error
    store.close()
    return run_id


def run_cli(store: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("ABSTRACTRUNTIME_STORE", None)
    return subprocess.run([str(BIN), "--store", str(store), *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def secret_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("secret-report") / "store"
    secret_run(root)
    return root


def test_the_run_really_carries_the_secrets(secret_store: Path) -> None:
    # The premise: while the run waited, the values existed beside it, so a page built from them
    # would have shown them; once it ended they were dropped (nothing left to leak from the files).
    kept = (secret_store.parent / "secrets-while-waiting").read_bytes()
    for value in ("S3CRETdbPass", "DE89S3CRETiban", "S3CRETnodeSetToken", "S3CRETresultAccess"):
        assert value.encode() in kept, value
    files = b"".join(p.read_bytes() for p in (secret_store / "runs" / "secrets").iterdir() if p.is_file())
    for value in ("S3CRETdbPass", "DE89S3CRETiban", "S3CRETnodeSetToken", "S3CRETresultAccess", "S3CRETanswerPW"):
        assert value.encode() not in files, value


def test_the_page_holds_no_secret_and_is_private(secret_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "secrets.html"
    proc = run_cli(secret_store, "report", "secrets", "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    page = out.read_bytes()
    assert MARK.encode() not in page, _around(page)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # Still a useful page: what was redacted shows as such, what was not stays.
    assert b"[REDACTED]" in page and b"visible value" in page and b"db.internal:5432/app" in page
    assert b'id="f-status">failed<' in page


def test_every_point_in_time_holds_no_secret(secret_store: Path, tmp_path: Path) -> None:
    last = len((secret_store / "runs" / "secrets" / "ledger.jsonl").read_text().splitlines())
    for seq in range(1, last + 1):
        proc = run_cli(secret_store, "report", "secrets", "--at", str(seq), "-o", "-", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert MARK not in proc.stdout, (seq, _around(proc.stdout.encode()))


def test_all_pages_json_and_messages_hold_no_secret(secret_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    proc = run_cli(secret_store, "--json", "report", "--all", "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert MARK not in proc.stdout + proc.stderr
    pages = sorted(out.iterdir())
    assert [p.name for p in pages] == ["index.html", "secrets.html"]
    for page in pages:
        assert MARK.encode() not in page.read_bytes(), page.name
        assert stat.S_IMODE(page.stat().st_mode) == 0o600, page.name
    single = run_cli(secret_store, "--json", "report", "secrets", "-o", str(tmp_path / "one.html"), cwd=tmp_path)
    assert single.returncode == 0 and MARK not in single.stdout + single.stderr
    assert json.loads(single.stdout)["status"] == "failed"


def test_build_report_redacts_with_the_rules_it_is_given(secret_store: Path) -> None:
    from abstractruntime import open_store
    from abstractruntime.core.redaction import Redactor
    from abstractruntime.report import build_report

    store = open_store(secret_store)
    try:
        html = build_report(store, "secrets")
        assert MARK not in html
        # An embedder's own rules apply on top of what the ledger redacted.
        assert "visible value" not in build_report(store, "secrets", redactor=Redactor(extra_patterns=["visible"]))
    finally:
        store.close()


def _around(page: bytes) -> str:
    at = page.find(MARK.encode())
    return page[max(0, at - 200): at + 60].decode("utf-8", "replace")
