"""Connection strings (abstractruntime/storage/dsn.py): recognised, checked the way libpq reads
them, and never shown with a password — whatever the form or the mistake in it."""

from __future__ import annotations

import pytest

from abstractruntime.core.errors import InvalidInputError
from abstractruntime.storage import dsn

SECRET = "Hunter2-secret"


@pytest.mark.parametrize("text, expected", [
    ("postgresql://app@db/runs", True),
    ("POSTGRES://app@db/runs", True),
    ("host=db dbname=runs", True),
    ("  dbname = runs password='a b'", True),
    ("hots=db password=x", True),  # a misspelt first keyword is still not taken for a folder
    ("a=b", False),
    ("runs/store", False),
    (".abstractruntime", False),
    ("", False),
])
def test_connection_strings_are_told_from_folders(text: str, expected: bool) -> None:
    assert dsn.is_connection_string(text) is expected


def test_a_url_is_read_as_libpq_reads_it() -> None:
    parsed = dsn.parse(f"postgresql://app:{SECRET}@db.internal:5432/runs?sslmode=require&password={SECRET}")
    assert parsed.kind == "url"
    assert parsed.params["user"] == "app" and parsed.params["password"] == SECRET
    assert parsed.params["dbname"] == "runs" and parsed.params["sslmode"] == "require"
    assert parsed.redacted() == "postgresql://app:***@db.internal:5432/runs?sslmode=require&password=***"
    assert str(parsed) == parsed.redacted() and SECRET not in repr(parsed)
    # Encoded characters are fine: libpq decodes them as we do.
    assert dsn.parse("postgresql://app:a%2Fb%40c@db/runs").params["password"] == "a/b@c"
    # libpq ends the user information at the first '@' before a '/': a '?' is part of it.
    assert dsn.parse("postgresql://app:p?w@db/runs").redacted() == "postgresql://app:***@db/runs"


@pytest.mark.parametrize("url", [
    f"postgresql://user:{SECRET}/b@db/runs",      # '/' in the password: libpq reads host 'user', port 'Hunter2...'
    f"postgresql://user:{SECRET} b@db/runs",      # a space
    f"postgresql://user:{SECRET}@b@db/runs",      # '@' in the password: libpq reads host 'b@db'
    f"postgresql://user:{SECRET}%zz@db/runs",     # a broken escape
    f"postgresql://db/runs?password={SECRET} b",  # a space in a query value
])
def test_a_url_libpq_would_misread_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        dsn.parse(url)
    text = str(info.value) + repr(info.value.to_dict())
    assert "Hunter2" not in text and "secret" not in text
    assert "percent-encode" in text or "%25" in text


def test_key_value_strings_are_parsed_and_redacted() -> None:
    parsed = dsn.parse(f"host=db port=5432 dbname=runs user=app password='{SECRET} with spaces' sslmode=require")
    assert parsed.kind == "keywords"
    assert parsed.params["password"] == f"{SECRET} with spaces" and parsed.params["port"] == "5432"
    assert parsed.redacted() == "host=db port=5432 dbname=runs user=app password=*** sslmode=require"
    assert dsn.parse(r"password=a\ b dbname=x").params["password"] == "a b"


@pytest.mark.parametrize("text", [
    f"host=db password={SECRET} tail-fragment",  # 'tail-fragment' reads as a keyword without '='
    f"host=db password='{SECRET}",              # an unclosed quote
    f"hots=db password={SECRET}",               # not a keyword
])
def test_a_broken_key_value_string_is_refused_without_showing_it(text: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        dsn.parse(text)
    assert "Hunter2" not in str(info.value) and "tail-fragment" not in str(info.value)
    assert "keyword=value" in str(info.value)


def test_redact_hides_every_form_in_free_text() -> None:
    cases = [
        f"cannot connect to postgresql://bob:{SECRET}@db:5432/x: refused",
        f"postgresql://bob:{SECRET}@t@db:5432/x",
        f"postgresql://bob:a/{SECRET}@db/x",
        f"https://key:{SECRET}@llm.example/v1",
        f"host=db password={SECRET} dbname=x",
        f"host=db password='{SECRET} b' dbname=x",
        f"postgresql://u@h/d?sslmode=require&password={SECRET}",
    ]
    for text in cases:
        assert SECRET not in dsn.redact(text), text
    assert dsn.redact("postgresql://bob:s3cr@t@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert dsn.redact("postgres://bob@db/x") == "postgres://bob@db/x"


def test_redact_hides_a_password_with_spaces_in_a_url_as_the_redaction_rules_do() -> None:
    from abstractruntime.core.redaction import Redactor

    cases = [
        f"could not connect to postgresql://bob:{SECRET} tail-fragment@db:5432/x: refused",
        f"postgresql://bob:x9 {SECRET}@t@db:5432/x",
        f"see https://key:pass {SECRET} word@llm.example/v1 for details",
    ]
    for text in cases:
        for redacted in (dsn.redact(text), Redactor().redact_text(text)):
            assert SECRET not in redacted and "tail-fragment" not in redacted, redacted
            assert "@" in redacted and "://" in redacted  # the rest of the URL stays readable
    assert dsn.redact(cases[0]) == "could not connect to postgresql://bob:***@db:5432/x: refused"
    assert dsn.redact("db at postgresql://db:5432/x ready, user bob: ok") == \
        "db at postgresql://db:5432/x ready, user bob: ok"


def test_scrub_removes_what_libpq_quotes() -> None:
    parsed = dsn.parse(f"host=db user=app password={SECRET}")
    message = f'connection to server failed: FATAL: password "{SECRET}" rejected for {parsed.text}'
    assert SECRET not in parsed.scrub(message)
