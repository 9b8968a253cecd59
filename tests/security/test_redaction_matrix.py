"""Secrets under everyday names and in everyday shapes never reach the ledger; harmless keys stay.

The matrix is the documented vocabulary (docs/redaction.md), positive and negative, by key,
by value shape and by container shape; then ``redact_collect`` (exact paths, and a property:
putting the originals back at their paths gives the input), workflow-declared rules, and the
bytes of real ledgers written through the runtime and the CLI.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abstractruntime import (Effect, EffectType, InMemoryLedgerStore, InMemoryRunStore, Runtime, StepPlan,
                             WorkflowSpec, open_store)
from abstractruntime.core.effects import EffectOutcome
from abstractruntime.core.errors import InvalidInputError
from abstractruntime.core.redaction import REDACTED, NoRedaction, Redactor, declared_rules
from abstractruntime.storage.verify import verify_run

R = Redactor()

# -- keys --------------------------------------------------------------------------------

SECRET_KEYS = [
    "aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "awsSecretAccessKey", "accessToken", "access-token",
    "clientSecret", "client_secret", "privateKey", "PRIVATE_KEY", "refreshToken", "secretKey", "secret_key",
    "sessionToken", "pwd", "dsn", "SENTRY_DSN", "jwt", "passwd", "password", "Password2", "db_password",
    "api_key", "apiKey", "APIKey", "X-Api-Key", "x_api_key", "openai_api_key", "Authorization",
    "Proxy-Authorization", "cookie", "Cookie", "Set-Cookie", "cookies", "token", "id_token", "github_token",
    "oauth2Token", "basic_auth", "auth", "credentials", "passphrase", "connection_string",
    "ocp-apim-subscription-key", "SecretString", "x-amz-security-token", "webhook.secret", "password_confirmation",
    # The whole key or its last segment is in the vocabulary (issue 22): short words too.
    "pass", "PASS", "db_pass", "DB_PASS", "smtp-pass", "mail.pass", "wifiPass", "pin", "PIN", "userPin",
    "card_pin", "otp", "OTP", "sms_otp", "cvv", "CVV2", "card_cvv", "cvc", "private_key_id", "privateKeyId",
    "gcp_private_key_id", "pin_code", "otp_code", "mfa_code", "totp", "verification_code", "auth_code",
    "authorization_code", "security_code",
]
HARMLESS_KEYS = [
    "token_count", "max_tokens", "maxTokens", "tokens", "usage", "prompt_tokens", "completion_tokens",
    "total_tokens", "keyboard", "primary_key", "key", "keys", "wait_key", "result_key", "idempotency_key",
    "event_key", "public_key", "key_id", "next_page_token", "nextPageToken", "eos_token", "pad_token",
    "tokenizer", "token_type", "author", "session_id", "monkey", "secret_name", "name", "url", "headers",
    "description", "passage", "compass", "bypass", "sort_key", "cache_key",
    # A vocabulary word inside a longer word, or not the last segment, is not a secret.
    "passenger", "passengers", "pinned", "pinned_at", "pass_rate", "passRate", "pass_count", "passed", "passing",
    "surpass", "trespass", "passport", "spin", "opinion", "pinpoint", "pin_count", "pinyin", "otp_enabled",
    "cvv_required", "token_budget", "tokensUsed", "code", "zip_code", "country_code", "status_code", "api_version",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_key_is_redacted(key: str) -> None:
    assert R.is_secret_key(key)
    assert R.redact({key: "v4lue-of-the-secret", "other": 1}) == {key: REDACTED, "other": 1}


@pytest.mark.parametrize("key", HARMLESS_KEYS)
def test_harmless_key_is_kept(key: str) -> None:
    assert not R.is_secret_key(key)
    value = {key: "some plain value", "n": 3}
    assert R.redact(value) == value


def test_flags_and_nulls_under_secret_keys_are_kept() -> None:
    value = {"use_auth": True, "password_required": False, "token": None, "api_key": 0}
    assert R.redact(value) == {"use_auth": True, "password_required": False, "token": None, "api_key": REDACTED}


def test_whole_containers_under_a_secret_key_go() -> None:
    assert R.redact({"credentials": {"user": "ann", "pw": "x"}, "cookies": [{"n": "s"}]}) == \
        {"credentials": REDACTED, "cookies": REDACTED}


# -- values inside strings -----------------------------------------------------------------

# (text, what it must become); only the secret part is replaced.
VALUE_MATRIX = [
    ("Bearer abcDEF123456.xyz", f"Bearer {REDACTED}"),
    ("authorization: bearer 0123456789abcdef", f"authorization: bearer {REDACTED}"),
    ("Basic dXNlcjpodW50ZXIy", f"Basic {REDACTED}"),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----", REDACTED),
    ("key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkt\n-----END OPENSSH PRIVATE KEY-----\nbye",
     f"key:\n{REDACTED}\nbye"),
    ("-----BEGIN EC PRIVATE KEY-----\ncut off mid-way", REDACTED),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     f"jwt {REDACTED}"),
    ("sk-proj-Abc123Def456Ghi789Jkl012", REDACTED),
    ("use sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv now", f"use {REDACTED} now"),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", REDACTED),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", REDACTED),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKl", REDACTED),
    ("AKIAIOSFODNN7EXAMPLE", REDACTED),
    ("key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", f"key={REDACTED}"),
    ("postgresql://app:s3cr3t@db.example.com:5432/app", f"postgresql://app:{REDACTED}@db.example.com:5432/app"),
    ("https://x-access-token:abc@github.com/o/r.git", f"https://x-access-token:{REDACTED}@github.com/o/r.git"),
    ("https://api.example.com/v1?api_key=abc123&page=2", f"https://api.example.com/v1?api_key={REDACTED}&page=2"),
    ('{"password": "hunter2", "user": "ann"}', f'{{"password": "{REDACTED}", "user": "ann"}}'),
    ("{'token': 'abc', 'n': 1}", f"{{'token': '{REDACTED}', 'n': 1}}"),
    ("Server=db;User Id=sa;Password=p@ss;", f"Server=db;User Id=sa;Password={REDACTED};"),
    ("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI", f"export AWS_SECRET_ACCESS_KEY={REDACTED}"),
    ("--client-secret=shh123 --verbose", f"--client-secret={REDACTED} --verbose"),
    ("X-Api-Key: abc123xyz", f"X-Api-Key: {REDACTED}"),
    # Shapes that leaked before issue 22.
    ("curl -u ann:hunter2 https://api.example.com", f"curl -u ann:{REDACTED} https://api.example.com"),
    ("curl -s -uann:hunter2 -X POST https://x.io", f"curl -s -uann:{REDACTED} -X POST https://x.io"),
    ("curl --user ann:hunter2 https://x.io", f"curl --user ann:{REDACTED} https://x.io"),
    ("curl --user=ann:hunter2 https://x.io", f"curl --user=ann:{REDACTED} https://x.io"),
    ("curl -u 'ann:pa ss' https://x.io", f"curl -u 'ann:{REDACTED}' https://x.io"),
    ("mysql -h db -uroot -pS3cretPW shop", f"mysql -h db -uroot -p{REDACTED} shop"),
    ("mysqldump -u app -p'S3cret PW' shop > d.sql", f"mysqldump -u app -p'{REDACTED}' shop > d.sql"),
    ("mariadb -pS3cretPW -e 'select 1'", f"mariadb -p{REDACTED} -e 'select 1'"),
    ("post to https://hooks.slack.com/services/T0123ABCD/B0456EFGH/aBcDeFgHiJkLmNoPqRsTuVwX",
     f"post to https://hooks.slack.com/services/{REDACTED}"),
    ("https://hooks.slack.com/workflows/T0123ABCD/A0456/789/aBcDeFgHiJ", f"https://hooks.slack.com/workflows/{REDACTED}"),
    ("https://discord.com/api/webhooks/123456789012345678/aBcDeFgHiJkLmNoPqRsTuVwXyZ_0123",
     f"https://discord.com/api/webhooks/{REDACTED}"),
    ('Authorization: Digest username="ann", realm="api", nonce="dcd98b7102dd2f0e", uri="/x", '
     'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c"',
     f'Authorization: Digest username="ann", realm="api", nonce="dcd98b7102dd2f0e", uri="/x", '
     f'response="{REDACTED}", opaque="5ccc069c"'),
    ("digest username=ann, response=6629fae49393a05397450978507c4ef1", f"digest username=ann, response={REDACTED}"),
    ("Authorization: Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", f"Authorization: Token {REDACTED}"),
    ("Authorization: Token xyz", f"Authorization: Token {REDACTED}"),
    ("X-Upstream: Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", f"X-Upstream: Token {REDACTED}"),
    ("-H 'Authorization: Token xyz'", f"-H 'Authorization: Token {REDACTED}'"),
    ("postgresql://app:pa/ss@db/app", f"postgresql://app:{REDACTED}@db/app"),
    ("postgresql://user:a b@host", f"postgresql://user:{REDACTED}@host"),
    ("postgresql://user:p@ss@host/db", f"postgresql://user:{REDACTED}@host/db"),
    ("connect to mysql://root:p@ss/w0rd@10.0.0.5:3306/shop failed",
     f"connect to mysql://root:{REDACTED}@10.0.0.5:3306/shop failed"),
    ('body: {\\"password\\": \\"hunter2\\", \\"user\\": \\"ann\\"}',
     f'body: {{\\"password\\": \\"{REDACTED}\\", \\"user\\": \\"ann\\"}}'),
    ("db_pass=hunter2 host=db", f"db_pass={REDACTED} host=db"),
    ("PASS=hunter2", f"PASS={REDACTED}"),
    ("userPin: 4711, name: ann", f"userPin: {REDACTED}, name: ann"),
    ("{'otp': '123456', 'cvv': '737'}", f"{{'otp': '{REDACTED}', 'cvv': '{REDACTED}'}}"),
    ('"private_key_id": "5f2c9b8e1d"', f'"private_key_id": "{REDACTED}"'),
]
HARMLESS_TEXTS = [
    "the bearer of this letter", "basic information about billing", "mysql://root@localhost/db",
    "https://example.com/a?page=2&sort=asc", "task-abcdefghijklmnopqrstuvwxyz0123456789", "ratio 3:4, time=12:30",
    "Error: token expired at 12:00", '{"max_tokens": 100, "model": "gpt-4o"}', "see https://example.com/docs",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----", "eyJ alone is not a token",
    "max_tokens=512 temperature=0.2",
    # Near misses of the shapes above.
    "docker run -u 1000:1000 app", "git push -u origin main", "curl -u ann https://x.io", "mkdir -p /tmp/a/b",
    "ssh -p 2222 ann@host", "docker run -p8080:80 nginx", "mysql -u root -p shop", "response=json&page=2",
    "Digest authentication failed for ann", "https://hooks.example.com/services/T0/B0/abc",
    "http://localhost:8000/api returned 500 for bob@example.com", "redis://cache:6379 is down, mail ops@example.com",
    "ssh://git@github.com/o/r.git", "scp build.tgz ann@host:/tmp", "passenger: Ann, pinned: true",
    "pass_rate=0.93 token_count=812", "compass: north", "all tests pass, 12 passed", "Token expired at 12:00", "Token 50256 ends the text",
    "the next token is 'the'", "postgresql://app@db/app", "key_id=5f2c9b8e1d",
]


@pytest.mark.parametrize(("text", "expected"), VALUE_MATRIX, ids=[t[:24] for t, _ in VALUE_MATRIX])
def test_secret_value_is_redacted_under_any_key(text: str, expected: str) -> None:
    assert R.redact({"note": text}) == {"note": expected}
    assert R.redact([text]) == [expected]


@pytest.mark.parametrize("text", HARMLESS_TEXTS, ids=[t[:24] for t in HARMLESS_TEXTS])
def test_harmless_text_is_kept(text: str) -> None:
    assert R.redact({"note": text}) == {"note": text}


def test_redaction_is_idempotent() -> None:
    once = R.redact({"note": [t for t, _ in VALUE_MATRIX]})
    assert R.redact(once) == once


def test_patterns_can_be_turned_off() -> None:
    keys_only = Redactor(patterns=())
    assert keys_only.redact({"note": "Bearer abcDEF123456", "token": "x"}) == \
        {"note": "Bearer abcDEF123456", "token": REDACTED}


# -- container shapes ----------------------------------------------------------------------

def test_headers_as_a_list_of_pairs() -> None:
    headers = [["Authorization", "Bearer x"], ["Accept", "application/json"], ("X-Api-Key", "k")]
    assert R.redact({"headers": headers}) == {"headers": [["Authorization", REDACTED],
                                                          ["Accept", "application/json"], ["X-Api-Key", REDACTED]]}


def test_headers_as_name_value_objects() -> None:
    har = [{"name": "Authorization", "value": "abc"}, {"name": "Accept", "value": "json"},
           {"Key": "db_password", "Value": "x"}, {"key": "cookie", "value": "sid=1"}]
    assert R.redact(har) == [{"name": "Authorization", "value": REDACTED}, {"name": "Accept", "value": "json"},
                             {"Key": "db_password", "Value": REDACTED}, {"key": "cookie", "value": REDACTED}]


def test_lists_that_only_look_like_pairs_are_kept() -> None:
    value = {"choices": ["password", "pin"], "pairs": [["a", 1], "not a pair"], "ops": [["token", "a", "b"]]}
    assert R.redact(value) == value


# -- redact_collect ----------------------------------------------------------------------------

def _put(root: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    target = root
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return root


def test_redact_collect_paths_are_exact() -> None:
    value = {"a": {"password": "p1", "list": [1, {"token": "t1"}]}, "headers": [["Authorization", "Bearer q"]],
             "note": "dsn postgresql://u:pw@h/db", "har": [{"name": "Cookie", "value": "c"}], "ok": "fine"}
    redacted, found = R.redact_collect(value)
    assert sorted(found, key=repr) == sorted([
        (("a", "password"), "p1"), (("a", "list", 1, "token"), "t1"), (("headers", 0, 1), "Bearer q"),
        (("note",), "dsn postgresql://u:pw@h/db"), (("har", 0, "value"), "c"),
    ], key=repr)
    assert redacted == R.redact(value)
    assert value["a"]["password"] == "p1"  # the input is never changed
    restored = copy.deepcopy(redacted)
    for path, original in found:
        _put(restored, path, original)
    assert restored == value


def test_redact_collect_of_a_bare_secret_string_has_the_empty_path() -> None:
    assert R.redact_collect("Bearer abc123def") == (f"Bearer {REDACTED}", [((), "Bearer abc123def")])
    assert R.redact_collect(5) == (5, [])


def test_redact_at_judges_the_path_a_delta_names() -> None:
    assert R.redact_at(["password"], "hunter2") == (REDACTED, [((), "hunter2")])
    assert R.redact_at(["cfg", "db", "secretKey"], {"a": 1}) == (REDACTED, [((), {"a": 1})])
    assert R.redact_at(["cfg", 0], {"token": "t"}) == ({"token": REDACTED}, [(("token",), "t")])
    assert R.redact_at(["max_tokens"], 5) == (5, [])


def test_no_redaction_collects_nothing() -> None:
    value = {"password": "p", "note": "Bearer abc123def"}
    assert NoRedaction().redact(value) is value
    assert NoRedaction().redact_collect(value) == (value, [])
    assert NoRedaction().redact_at(["password"], "p") == ("p", [])


def test_a_cycle_is_an_error_not_a_hang() -> None:
    value: dict[str, Any] = {"a": 1}
    value["self"] = value
    with pytest.raises(InvalidInputError, match=r"reference cycle at self"):
        R.redact(value)


KEYS = st.sampled_from(SECRET_KEYS[:12] + HARMLESS_KEYS[:12] + ["name", "value", "a", "b"])
TEXTS = st.one_of(st.text(max_size=12), st.sampled_from([t for t, _ in VALUE_MATRIX] + HARMLESS_TEXTS))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), TEXTS)
JSON = st.recursive(SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(KEYS, kids, max_size=5),
    st.lists(st.tuples(KEYS, kids).map(list), min_size=1, max_size=3)), max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_originals_put_back_at_their_paths_give_the_input(value: Any) -> None:
    redacted, found = R.redact_collect(value)
    assert redacted == R.redact(value)
    restored = copy.deepcopy(redacted)
    for path, original in found:
        restored = _put(restored, path, original)
    assert restored == value
    assert len({path for path, _ in found}) == len(found)


# -- declared rules ------------------------------------------------------------------------------

def test_extra_keys_and_patterns() -> None:
    r = Redactor(extra_keys=["ssn", "member-number"], extra_patterns=[r"\b\d{3}-\d{2}-\d{4}\b",
                                                                       r"card (?P<secret>\d{4}-\d{4})"])
    assert r.redact({"SSN": "x", "memberNumber": 7, "note": "ssn is 078-05-1120, card 1234-5678 ok"}) == \
        {"SSN": REDACTED, "memberNumber": REDACTED, "note": f"ssn is {REDACTED}, card {REDACTED} ok"}
    assert r.is_secret_key("password")  # the defaults still apply


def test_a_workflow_module_declares_rules() -> None:
    module = types.ModuleType("wf")
    module.redact_keys = ["ssn"]  # type: ignore[attr-defined]
    module.redact_patterns = [r"ACCT-\d+"]  # type: ignore[attr-defined]
    assert declared_rules(module) == (("ssn",), (r"ACCT-\d+",))
    r = R.for_workflow(module)
    assert r.redact({"ssn": "1", "note": "pay ACCT-12345 now"}) == {"ssn": REDACTED, "note": f"pay {REDACTED} now"}
    assert R.redact({"ssn": "1"}) == {"ssn": "1"}  # the base redactor is unchanged
    spec = WorkflowSpec("w", "n", {"n": lambda run, ctx: StepPlan("n", complete_output={})})
    assert R.for_workflow(spec) is R  # declares nothing


@pytest.mark.parametrize("bad", [{"redact_keys": "ssn"}, {"redact_keys": [1]}, {"redact_patterns": ["("]},
                                 {"redact_keys": 5}, {"redact_patterns": "x"}])
def test_bad_declarations_are_refused(bad: dict) -> None:
    with pytest.raises(InvalidInputError):
        declared_rules(bad)


# -- real ledgers -------------------------------------------------------------------------------

SECRETS = {f"{key}": f"S3CRET-{i:03d}-value" for i, key in enumerate(SECRET_KEYS)}
PATTERN_SECRETS = ["Bearer abcDEF123456.xyz", "postgresql://app:s3cr3tpw@db/app", "AKIAIOSFODNN7EXAMPLE",
                   "ghp_abcdefghijklmnopqrstuvwxyz0123456789"]


def _call(run: Any, ctx: Any) -> StepPlan:
    payload = {"headers": [["Authorization", SECRETS["Authorization"]]],
               "har": [{"name": "Cookie", "value": SECRETS["Cookie"]}],
               "params": {k: v for k, v in SECRETS.items() if k not in ("Authorization", "Cookie")},
               "notes": PATTERN_SECRETS, "max_tokens": 512}
    return StepPlan("call", next_node="done", effect=Effect(EffectType.TOOL_CALLS, payload, result_key="out"))


def _done(run: Any, ctx: Any) -> StepPlan:
    return StepPlan("done", complete_output={"ok": True, "usage": {"prompt_tokens": 7}})


FLOW = WorkflowSpec("secrets-matrix", "call", {"call": _call, "done": _done})


def _tool(run: Any, effect: Effect) -> EffectOutcome:
    assert effect.payload["headers"][0][1] == SECRETS["Authorization"]  # the handler gets real values
    return EffectOutcome.completed({"sessionToken": "S3CRET-result-token", "echo": effect.payload["notes"]})


@pytest.mark.parametrize("backend", ["memory", "files"])
def test_no_secret_of_the_matrix_reaches_the_ledger(backend: str, tmp_path: Path) -> None:
    handlers = {EffectType.TOOL_CALLS: _tool}
    if backend == "files":
        store = open_store(tmp_path / "store")
        runtime = store.runtime(effect_handlers=handlers)
    else:
        runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(), effect_handlers=handlers)
    run_id = runtime.start(workflow=FLOW, vars={"secret_key": "S3CRET-var", "clientSecret": "S3CRET-var2"})
    state = runtime.tick(workflow=FLOW, run_id=run_id)
    assert state.status.value == "completed", state.error
    import json
    data = (Path(store.root) / "runs" / run_id / "ledger.jsonl").read_text() if backend == "files" \
        else json.dumps(runtime.get_ledger(run_id))
    leaked = [s for s in [*SECRETS.values(), *PATTERN_SECRETS, "S3CRET-var", "S3CRET-result-token"]
              if s in data or re.search(re.escape(s.split()[-1]), data)]
    assert leaked == []
    assert "512" in data and "prompt_tokens" in data
    if backend == "files":
        assert verify_run(store.root, run_id).ok


def _vars_node(run: Any, ctx: Any) -> StepPlan:
    run.vars["password"] = "S3CRET-set-by-node"
    run.vars.setdefault("cfg", {})["apiKey"] = "S3CRET-nested"
    return StepPlan("n", complete_output={"ok": True})


def test_secrets_a_node_puts_in_vars_never_reach_the_ledger(tmp_path: Path) -> None:
    flow = WorkflowSpec("vars-secrets", "n", {"n": _vars_node})
    store = open_store(tmp_path / "store")
    runtime = store.runtime()
    run_id = runtime.start(workflow=flow, vars={"cfg": {}})
    assert runtime.tick(workflow=flow, run_id=run_id).status.value == "completed"
    data = (Path(store.root) / "runs" / run_id / "ledger.jsonl").read_text()
    assert "S3CRET-set-by-node" not in data and "S3CRET-nested" not in data


def test_cli_var_secret_key_is_not_recorded(tmp_path: Path) -> None:
    workflow = tmp_path / "wf.py"
    workflow.write_text("from abstractruntime import StepPlan, WorkflowSpec\n"
                        "workflow = WorkflowSpec('w', 'done', {'done': lambda run, ctx: "
                        "StepPlan('done', complete_output={'ok': True})})\n")
    store = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-m", "abstractruntime", "--store", str(store), "run", str(workflow),
                           "--var", "secret_key=S3CRET-cli-1", "--var", "accessToken=S3CRET-cli-2",
                           "--var", "max_tokens=512"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ledgers = list(store.glob("runs/*/ledger.jsonl"))
    assert len(ledgers) == 1
    data = ledgers[0].read_text()
    assert "S3CRET-cli" not in data and data.count(REDACTED) >= 2 and "512" in data


def _loop(run: Any, ctx: Any) -> StepPlan:
    run.vars["i"] = run.vars.get("i", 0) + 1
    if run.vars["i"] == 3:
        run.vars["api_token"] = "S3CRET-anchored"
    if run.vars["i"] >= 1100:
        return StepPlan("loop", complete_output={"n": run.vars["i"]})
    return StepPlan("loop", next_node="loop")


def test_anchors_hold_the_state_as_the_ledger_has_it(tmp_path: Path) -> None:
    flow = WorkflowSpec("anchored", "loop", {"loop": _loop})
    store = open_store(tmp_path / "store", durability="none")
    runtime = store.runtime()
    run_id = runtime.start(workflow=flow, vars={"password": "S3CRET-start"})
    assert runtime.tick(workflow=flow, run_id=run_id, max_steps=2000).status.value == "completed"
    anchors = (Path(store.root) / "runs" / run_id / "anchors.jsonl").read_bytes()
    assert anchors and b"S3CRET" not in anchors and b'"api_token":{"$secret":' in anchors
    store.close()


def _raises(run: Any, ctx: Any) -> StepPlan:
    raise RuntimeError("db postgresql://app:S3CRET-pw@db/app said no; api_key=S3CRET-key")


def test_the_error_a_state_change_carries_goes_through_the_rules(tmp_path: Path) -> None:
    flow = WorkflowSpec("fails", "n", {"n": _raises})
    store = open_store(tmp_path / "store")
    runtime = store.runtime()
    run_id = runtime.start(workflow=flow)
    assert runtime.tick(workflow=flow, run_id=run_id).status.value == "failed"
    failed = [r for r in runtime.get_ledger(run_id) if r.get("status") == "failed"][-1]
    assert failed["delta"]["error"].endswith("db postgresql://app:[REDACTED]@db/app said no; api_key=[REDACTED]")
    store.close()
