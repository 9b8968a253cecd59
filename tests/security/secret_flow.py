"""A workflow that carries many kinds of secrets, the commands that drive it, and scans for them.

The workflow file (:data:`FLOW_SOURCE`) is run through the installed command like any
operator's file: its start variables, the variables its nodes set, an effect's payload (URL
passwords, headers as an object, as pairs and as name/value objects, a PEM key, command lines),
its result, a retryable failure's error text, an answer, a second effect and the node error
that ends the run all hold a secret whose real value contains ``S3CRET`` (the one that cannot:
Basic credentials, base64 — listed in :data:`TOKENS` as it is written). ``SECRET_FLOW_KILL``
names points where the process kills itself with SIGKILL, once per run and point.

Scanning (:func:`scan_files`, :func:`scan_rows`) looks for every real value in every file of a
folder store and every row of every table of a PostgreSQL schema.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterable, Optional

CLI = str(Path(sys.executable).parent / "abstractruntime")
MARK = "S3CRET"
BASIC = base64.b64encode(b"ann:S3CRET17basicPW").decode()
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAS3CRET06pemBody0123\n-----END RSA PRIVATE KEY-----"

START_VARS: dict[str, Any] = {
    "api_key": "sk-live-S3CRET01startKey0123456789abcdef",
    "db_url": "postgresql://app:S3CRET02dbPW@db.internal:5432/app",
    "db_pass": "S3CRET03dbPass",
    "userPin": "S3CRET04pin",
    "iban": "DE89S3CRET05iban3704004405320130",  # secret only because the workflow says so
    "deploy": {"key": PEM, "headers": [["Authorization", "Bearer S3CRET07headerBearer"]]},
    "notes": ["curl -u ann:S3CRET08curlPW https://api.example.com", "Authorization: Token S3CRET09token0123456789abcd",
              "post to https://hooks.slack.com/services/T0123/B0456/S3CRET10slackHook0123"],
    "plain": "visible value",
}
ANSWER = "yes, password=S3CRET26answerPW"

FLOW_SOURCE = textwrap.dedent('''
    import os
    import signal
    from pathlib import Path

    from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec

    redact_keys = ["iban"]  # a key only this workflow calls secret

    PEM = PEM_TEXT
    BASIC = BASIC_TEXT


    def _marks() -> Path:
        return Path(os.environ["SECRET_FLOW_MARKS"])


    def _kill(point, run):
        """A real kill -9 at ``point`` when SECRET_FLOW_KILL names it (once per run and point)."""
        if point in os.environ.get("SECRET_FLOW_KILL", "").split(","):
            mark = _marks() / f"killed-{run.run_id}-{point}"
            if not mark.exists():
                mark.write_text("killed")
                os.kill(os.getpid(), signal.SIGKILL)


    def _seen(run, what, value):
        """Write what a handler received (the test checks handlers get real values)."""
        with (_marks() / f"seen-{run.run_id}").open("a") as out:
            out.write(f"{what}={value}\\n")


    def fetch(run, ctx):
        run.vars["session_token"] = "S3CRET11nodeSetToken"
        run.vars["gcp"] = {"private_key_id": "S3CRET29privKeyId", "project": "demo"}
        return StepPlan("fetch", next_node="ask", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": [{
            "name": "http_get", "call_id": "c1", "arguments": {
                "url": "https://svc:S3CRET12payloadPW@api.example.com/v1/items",
                "headers": {"Authorization": "Bearer S3CRET13payloadBearer", "X-Api-Key": "S3CRET30xApiKey",
                            "Accept": "json"},
                "har": [{"name": "Cookie", "value": "sid=S3CRET14harCookie"}],
                "command": "mysql -uroot -pS3CRET15mysqlPW shop",
                "digest": 'Authorization: Digest username="ann", realm="api", response="S3CRET16digestResponse0123"',
                "basic": "Authorization: Basic " + BASIC,
                "key_file": PEM}}]}, result_key="fetched"))


    def call_tool(run, effect, default_next=None):
        arguments = effect.payload["tool_calls"][0]["arguments"]
        _seen(run, "tool_auth", arguments["headers"]["Authorization"])
        first = _marks() / f"failed-once-{run.run_id}"
        if not first.exists():
            first.write_text("failed")
            return EffectOutcome.failed(
                "upstream 401: Authorization: Bearer S3CRET18errBearer at postgresql://app:S3CRET19errPW@db/app "
                "ghp_S3CRET20abcdefghijklmnopqrstuvwxyz0123", retryable=True)
        _kill("tool", run)
        return EffectOutcome.completed({"mode": "executed", "results": [{
            "call_id": "c1", "success": True, "error": None,
            "output": {"access_token": "S3CRET21resultAccess", "log": "token=S3CRET22resultLog ok",
                       "refresh": "xoxb-123456789012-S3CRET23slackBot",
                       "note": "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.S3CRET24jwtSignature0123",
                       "aws": "AKIAS3CRET2512345678"}}]})


    def ask(run, ctx):
        return StepPlan("ask", next_node="confirm", effect=Effect(EffectType.ASK_USER, {"prompt": "Go on?"},
                                                                  result_key="reply"))


    def confirm(run, ctx):
        run.vars["otp"] = "S3CRET27otp"
        run.vars["card"] = {"cvv": "S3CRET28cvv", "last4": "4242"}
        return StepPlan("confirm", next_node="finish", effect=Effect(EffectType.WAIT_JOB, {
            "job_id": "j1", "auth": {"Authorization": "Bearer S3CRET31jobBearer"}, "key": run.vars["api_key"]},
            result_key="job"))


    def job(run, effect, default_next=None):
        _seen(run, "job_auth", effect.payload["auth"]["Authorization"])
        _seen(run, "job_key", effect.payload["key"])
        _kill("job", run)
        return EffectOutcome.completed({"ok": True, "sessionToken": "S3CRET32jobToken"})


    def finish(run, ctx):
        _kill("finish", run)
        raise RuntimeError("giving up: api_key=sk-proj-S3CRET33final0123456789abc and password='S3CRET34finalPW'")


    workflow = WorkflowSpec("secret-flow", "fetch", {"fetch": fetch, "ask": ask, "confirm": confirm,
                                                     "finish": finish})
    effect_handlers = {EffectType.TOOL_CALLS: call_tool, EffectType.WAIT_JOB: job}
''').replace("PEM_TEXT", repr(PEM)).replace("BASIC_TEXT", repr(BASIC))

# Every real value as it is written somewhere in a run (Basic credentials are base64).
TOKENS = [MARK, BASIC]

# The kinds of secret the workflow carries, each with the part of it a leak would show, and
# where it travels: kept (a value the run keeps beside it while it lives) or error text (replaced).
KINDS: dict[str, tuple[str, str]] = {
    "provider key under api_key (start variable)": ("S3CRET01", "kept"),
    "URL password (start variable)": ("S3CRET02", "kept"),
    "short key db_pass": ("S3CRET03", "kept"),
    "camelCase key userPin": ("S3CRET04", "kept"),
    "key only the workflow's rules name (iban)": ("S3CRET05", "kept"),
    "PEM private key": ("S3CRET06", "kept"),
    "header as a pair": ("S3CRET07", "kept"),
    "curl -u password": ("S3CRET08", "kept"),
    "Authorization: Token": ("S3CRET09", "kept"),
    "Slack webhook URL": ("S3CRET10", "kept"),
    "variable a node sets (session_token)": ("S3CRET11", "kept"),
    "URL password in an effect payload": ("S3CRET12", "kept"),
    "Authorization header in a payload": ("S3CRET13", "kept"),
    "name/value header (HAR cookie)": ("S3CRET14", "kept"),
    "mysql -p password": ("S3CRET15", "kept"),
    "HTTP Digest response": ("S3CRET16", "kept"),
    "Basic credentials": (BASIC, "kept"),
    "Bearer token in an error": ("S3CRET18", "error"),
    "URL password in an error": ("S3CRET19", "error"),
    "GitHub token in an error": ("S3CRET20", "error"),
    "access_token in a result": ("S3CRET21", "kept"),
    "token= in a result's text": ("S3CRET22", "kept"),
    "Slack bot token in a result": ("S3CRET23", "kept"),
    "JWT in a result": ("S3CRET24", "kept"),
    "AWS access key in a result": ("S3CRET25", "kept"),
    "password= in an answer": ("S3CRET26", "kept"),
    "otp a node sets": ("S3CRET27", "kept"),
    "cvv nested in a variable": ("S3CRET28", "kept"),
    "private_key_id": ("S3CRET29", "kept"),
    "X-Api-Key header": ("S3CRET30", "kept"),
    "Bearer in a second effect's payload": ("S3CRET31", "kept"),
    "sessionToken in a second result": ("S3CRET32", "kept"),
    "api_key= in the final error": ("S3CRET33", "error"),
    "password= in the final error": ("S3CRET34", "error"),
}

# Runs the real command line in a process whose Runtime.release_secrets kills it (SIGKILL): the
# run's last record is durable, its values not yet dropped.
KILL_ON_RELEASE = textwrap.dedent('''
    import os, signal, sys
    from abstractruntime.core import runtime

    def release(self, checkpoint, **kwargs):
        if checkpoint.run.run_id == os.environ["KILL_ON_RELEASE"] and checkpoint.run.status.is_terminal:
            os.kill(os.getpid(), signal.SIGKILL)

    runtime.Runtime.release_secrets = release
    from abstractruntime.cli.entry import run
    sys.exit(run(sys.argv[1:]))
''')


class Flow:
    """A store (folder or PostgreSQL URL), the registered workflow folder, and the command."""

    def __init__(self, tmp_path: Path, store: str) -> None:
        self.tmp = tmp_path
        self.store = store
        self.flows = tmp_path / "flows"
        self.marks = tmp_path / "marks"
        self.flows.mkdir(exist_ok=True)
        self.marks.mkdir(exist_ok=True)
        self.file = self.flows / "secrets_flow.py"
        self.file.write_text(FLOW_SOURCE)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_")}
        self.env = {**clean, "ABSTRACTRUNTIME_WORKFLOWS": str(self.flows), "SECRET_FLOW_MARKS": str(self.marks),
                    "NO_COLOR": "1"}

    def cli(self, *args: str, kill: str = "", release_kill: Optional[str] = None,
            input: Optional[str] = None) -> subprocess.CompletedProcess[str]:
        """The installed command (``kill``: SECRET_FLOW_KILL points; ``release_kill``: a run whose
        release of secrets kills the process)."""
        env = {**self.env, "SECRET_FLOW_KILL": kill}
        if release_kill is not None:
            env["KILL_ON_RELEASE"] = release_kill
            argv = [sys.executable, "-c", KILL_ON_RELEASE]
        else:
            argv = [CLI]
        return subprocess.run([*argv, "--store", self.store, "--no-input", *args], capture_output=True, text=True,
                              timeout=180, env=env, stdin=subprocess.DEVNULL if input is None else None, input=input,
                              cwd=self.tmp)

    def start(self, run_id: str, *, kill: str = "") -> subprocess.CompletedProcess[str]:
        """``run`` the workflow with the secret start variables (it stops on the tool's failure)."""
        return self.cli("run", str(self.file), "--run-id", run_id, "--vars-json", json.dumps(START_VARS), kill=kill)

    def seen(self, run_id: str) -> str:
        """What the run's handlers received."""
        path = self.marks / f"seen-{run_id}"
        return path.read_text() if path.exists() else ""

    def drive(self, run_id: str, *, kills: Iterable[str] = (), release_kill: bool = False) -> list[int]:
        """Take a run from its start to its end (failed by its last node), killed with -9 at ``kills``:
        run (tool fails) → retry → (tick after a kill) → answer → (tick after a kill) → failed.
        Returns the exit codes."""
        kill = ",".join(kills)
        codes = [self.start(run_id, kill=kill).returncode]
        assert codes[-1] == 1, codes
        retried = self.cli("retry", run_id, kill=kill)
        codes.append(retried.returncode)
        if retried.returncode == -9:
            again = self.cli("tick", run_id, kill=kill)
            codes.append(again.returncode)
        assert codes[-1] == 5, (codes, retried.stderr)
        answered = self.cli("resume", run_id, "--current", "--answer", ANSWER, kill=kill,
                            release_kill=run_id if release_kill else None)
        codes.append(answered.returncode)
        if answered.returncode == -9 and not release_kill:
            again = self.cli("tick", run_id, kill=kill)
            codes.append(again.returncode)
            assert again.returncode == 1, again.stderr
        return codes


def leaks(data: bytes) -> list[str]:
    """The real values found in ``data``."""
    return [t for t in TOKENS if t.encode() in data]


def scan_files(root: Path, *, skip_secrets: bool = True) -> dict[str, list[str]]:
    """Every file under ``root`` holding a real value (``secrets.jsonl`` left out when ``skip_secrets``)."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or (skip_secrets and path.name == "secrets.jsonl"):
            continue
        hit = leaks(path.read_bytes())
        if hit:
            found[str(path.relative_to(root))] = hit
    return found


def secret_files(root: Path) -> dict[str, list[dict[str, Any]]]:
    """The entries of every ``secrets.jsonl`` under ``root``, by run."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(root.glob("runs/*/secrets.jsonl")):
        out[path.parent.name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def _text(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False).encode()
    return str(value).encode()


def scan_rows(url: str, schema: str, *, skip_secrets: bool = True) -> dict[str, list[str]]:
    """Every row of every table of ``schema`` holding a real value (``secrets`` left out when
    ``skip_secrets``), as ``{"table#row": [values]}``."""
    import psycopg

    found: dict[str, list[str]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            [schema]).fetchall()]
        assert {"runs", "ledger", "secrets", "snapshots"} <= set(tables), tables
        for table in sorted(tables):
            if skip_secrets and table == "secrets":
                continue
            for index, row in enumerate(conn.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()):
                hit = leaks(b"\n".join(_text(v) for v in row if v is not None))
                if hit:
                    found[f"{table}#{index}"] = hit
    return found


def secret_rows(url: str, schema: str) -> dict[str, list[dict[str, Any]]]:
    """The entries of the ``secrets`` table, by run."""
    import psycopg

    out: dict[str, list[dict[str, Any]]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for run_id, entry in conn.execute(f'SELECT run_id, entry FROM "{schema}".secrets ORDER BY id').fetchall():
            out.setdefault(run_id, []).append(json.loads(bytes(entry)))
    return out
