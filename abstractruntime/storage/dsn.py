"""Connection strings: the one place that recognises, checks and redacts them.

A database store is named by a URL (``postgresql://user:pw@host:5432/db?sslmode=require``) or
by libpq's key/value form (``host=db port=5432 dbname=app user=app password='p w'``). Both
hold a password, so neither may reach a message as given:

- :func:`is_connection_string` tells a connection string from a folder path (a key/value
  string is recognised by its keywords, never mistaken for a folder and echoed);
- :func:`parse` checks one the way libpq will read it and returns a :class:`ConnectionString`
  whose :meth:`~ConnectionString.redacted` form is safe to print. A URL that libpq would read
  differently from what its writer meant — a ``/``, ``@`` or space in the password, a broken
  ``%`` escape — is refused here with a message that shows only the redacted form: libpq's
  own message would quote the part of the password it misread as a host, port or option;
- :func:`redact` hides every password in free text (URLs of any scheme and ``password=``
  pairs), for messages that quote a connection string they did not parse.

Standard library only: the kernel may import it without the ``postgres`` extra.
"""

from __future__ import annotations

import re
from dataclasses import field
from ..core.fastclass import dataclass
from typing import Optional
from urllib.parse import unquote

from ..core.errors import InvalidInputError
from ..core.redaction import URL_PASSWORD_PATTERN

URL_SCHEMES = ("postgresql://", "postgres://")
MASK = "***"

# libpq's connection keywords (PostgreSQL 12 to 17). A key/value string naming another
# keyword is refused without quoting it: an unquoted password with a space in it reads as a
# second keyword, and libpq's "invalid connection option" message would print it.
KEYWORDS = frozenset("""
    host hostaddr port dbname user password passfile require_auth channel_binding connect_timeout
    client_encoding options application_name fallback_application_name keepalives keepalives_idle
    keepalives_interval keepalives_count tcp_user_timeout replication gssencmode sslmode sslnegotiation
    requiressl sslcompression sslcert sslkey sslcertmode sslpassword sslkeylogfile sslrootcert sslcrl
    sslcrldir sslsni requirepeer ssl_min_protocol_version ssl_max_protocol_version min_protocol_version
    max_protocol_version krbsrvname gsslib gssdelegation service target_session_attrs load_balance_hosts
    scram_client_key scram_server_key
""".split())
SECRET_KEYWORDS = frozenset({"password", "sslpassword"})

# Patterns, compiled on first use (re caches them): every command that opens a store asks
# is_connection_string about its path, which for a folder needs only _KEYWORD_START.
_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*://"
_KEYWORD_START = r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*="
_ANY_KEYWORD = r"(?:^|\s)(" + "|".join(sorted(KEYWORDS)) + r")\s*="
_BAD_ESCAPE = r"%(?![0-9A-Fa-f]{2})"
# In free text: a URL up to the next whitespace, and password=... pairs (quoted or not).
_URL_IN_TEXT = r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*"
# A URL whose password holds a space runs past the next whitespace: the redaction rules' URL
# pattern finds it (one rule for messages and for ledgers).
_URL_PASSWORD = URL_PASSWORD_PATTERN
_SECRET_PAIR = r"(?i)(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&'\"]+)"


@dataclass(frozen=True)
class ConnectionString:
    """A checked connection string: ``text`` as given (it holds the password: never print it),
    ``kind`` (``"url"`` or ``"keywords"``) and the parameters libpq will read from it."""

    text: str = field(repr=False)
    kind: str = "url"
    params: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _safe: str = field(default="", repr=False, compare=False)

    def redacted(self) -> str:
        """The connection string with every password replaced by ``***`` (safe to print)."""
        return self._safe

    @property
    def secrets(self) -> tuple[str, ...]:
        """The passwords it holds, as given and decoded (for scrubbing messages)."""
        found: list[str] = []
        for key in SECRET_KEYWORDS:
            value = self.params.get(key)
            if value:
                found.append(value)
        if self.kind == "url":
            raw = _userinfo_password_raw(self.text)
            if raw:
                found.append(raw)
        return tuple(sorted(set(found), key=len, reverse=True))

    def scrub(self, message: str) -> str:
        """``message`` (e.g. libpq's) with this string, its passwords and any other password
        replaced: what is left is safe to print."""
        text = message.replace(self.text, self._safe)
        for secret in self.secrets:
            if len(secret) >= 3:  # a shorter one would mask ordinary letters of the message
                text = text.replace(secret, MASK)
        return redact(text)

    def __str__(self) -> str:
        return self._safe


def is_connection_string(value: object) -> bool:
    """True for a database URL (``postgresql://``, ``postgres://``) or a libpq key/value string.

    A key/value string starts with ``keyword=`` and names at least one libpq keyword, so a
    folder called ``a=b`` is still a folder, while ``host=db password=...`` never is.
    """
    if not isinstance(value, str):
        return False
    text = value.strip()
    if text.lower().startswith(URL_SCHEMES):
        return True
    return bool(re.match(_KEYWORD_START, text)) and bool(re.search(_ANY_KEYWORD, text))


def is_url(value: object) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URL (not a key/value string)."""
    return isinstance(value, str) and value.strip().lower().startswith(URL_SCHEMES)


def parse(value: str) -> ConnectionString:
    """Check a connection string the way libpq reads it; :class:`InvalidInputError` (showing only
    the redacted form) when libpq would read something else than its writer meant."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError("a database connection string must be a non-empty string")
    text = value.strip()
    if is_url(text):
        return _parse_url(text)
    if is_connection_string(text):
        return _parse_keywords(text)
    raise InvalidInputError(f"not a database connection string: {redact(text)!r} (expected postgresql://... "
                            "or key=value pairs such as 'host=db dbname=app')")


def redact(text: str) -> str:
    """``text`` with the password of every URL (any scheme) and every ``password=`` value
    replaced by ``***``.

    A URL's password runs to the last ``@`` before a host (the redaction rules'
    :data:`~abstractruntime.core.redaction.URL_PASSWORD_PATTERN`), so one holding a space, an
    unencoded ``@`` or ``/`` is hidden whole; then within a URL up to the next space, to its last
    ``@`` (the host may be hidden with it).
    """
    text = re.sub(_URL_PASSWORD, lambda m: text[m.start():m.start("secret")] + MASK + text[m.end("secret"):m.end()], text)
    text = re.sub(_URL_IN_TEXT, lambda m: _redact_url_loose(m.group(0)), text)
    return re.sub(_SECRET_PAIR, lambda m: m.group(1) + MASK, text)


# -- URLs ------------------------------------------------------------------------------------


def _redact_url_loose(url: str) -> str:
    scheme = re.match(_SCHEME, url)
    if scheme is None:
        return url
    head, rest = url[:scheme.end()], url[scheme.end():]
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        if colon:
            rest = f"{user}:{MASK}{rest[at:]}"
    return head + rest


def _userinfo_password_raw(url: str) -> Optional[str]:
    scheme = re.match(_SCHEME, url)
    rest = url[scheme.end():] if scheme else url
    at = rest.rfind("@")
    if at < 0:
        return None
    _, colon, password = rest[:at].partition(":")
    return password if colon and password else None


def _refuse_url(why: str) -> InvalidInputError:
    # The URL itself is not shown: where libpq and its writer disagree, so might any redaction.
    return InvalidInputError(f"the PostgreSQL URL cannot be used: {why}")


def _parse_url(url: str) -> ConnectionString:
    if any(ch.isspace() for ch in url):
        raise _refuse_url("it contains a space; percent-encode it (%20), also inside a password")
    if re.search(_BAD_ESCAPE, url):
        raise _refuse_url("a '%' is not followed by two hex digits; write a literal '%' as %25")
    scheme = re.match(_SCHEME, url)
    assert scheme is not None
    rest = url[scheme.end():]
    # libpq: the user information ends at the first '@' seen before any '/'.
    cut = next((i for i, ch in enumerate(rest) if ch in "@/"), len(rest))
    params: dict[str, str] = {}
    userinfo = ""
    if cut < len(rest) and rest[cut] == "@":
        userinfo, rest = rest[:cut], rest[cut + 1:]
        user, colon, password = userinfo.partition(":")
        if user:
            params["user"] = unquote(user)
        if colon:
            params["password"] = unquote(password)
    netloc_end = next((i for i, ch in enumerate(rest) if ch in "/?"), len(rest))
    netloc, tail = rest[:netloc_end], rest[netloc_end:]
    path, _, query = tail.partition("?")
    if "@" in netloc or "@" in path or (not userinfo and "@" in query and not _query_is_pairs(query)):
        raise _refuse_url("the user name or password holds a character that must be percent-encoded "
                               "('@' as %40, '/' as %2F, '?' as %3F, '#' as %23, ':' in a user name as %3A)")
    if path.startswith("/") and len(path) > 1:
        params["dbname"] = unquote(path[1:])
    safe_query = []
    for pair in query.split("&") if query else []:
        key, eq, val = pair.partition("=")
        key = unquote(key)
        if eq:
            params[key] = unquote(val)
        safe_query.append(f"{pair.split('=', 1)[0]}={MASK}" if key in SECRET_KEYWORDS else pair)
    safe = url[:scheme.end()]
    if userinfo:
        user, colon, _ = userinfo.partition(":")
        safe += f"{user}:{MASK}@" if colon else f"{user}@"
    safe += netloc + path + ("?" + "&".join(safe_query) if query else "")
    return ConnectionString(url, "url", params, safe)


def _query_is_pairs(query: str) -> bool:
    """Whether every ``&``-separated part of a URL query is ``keyword=value`` with a libpq keyword."""
    return all(part.partition("=")[1] and part.partition("=")[0] in KEYWORDS for part in query.split("&"))


# -- key/value strings -------------------------------------------------------------------------


def _refuse_keywords(why: str) -> InvalidInputError:
    return InvalidInputError(f"PostgreSQL connection string cannot be used: {why} "
                             "(keyword=value pairs separated by spaces; quote a value holding spaces: password='a b')")


def _parse_keywords(text: str) -> ConnectionString:
    """libpq's ``conninfo_parse``: ``keyword = value`` pairs; a value is bare (up to a space, ``\\``
    escapes the next character) or single-quoted (``\\'`` and ``\\\\`` inside)."""
    params: dict[str, str] = {}
    safe: list[str] = []
    i, n, index = 0, len(text), 0
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        index += 1
        start = i
        while i < n and not text[i].isspace() and text[i] != "=":
            i += 1
        key = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != "=" or not key:
            raise _refuse_keywords(f"part {index} is not keyword=value")
        if key not in KEYWORDS:
            raise _refuse_keywords(f"part {index} does not start with a PostgreSQL connection keyword")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise _refuse_keywords(f"the quoted value of part {index} is not closed")
                if text[i] == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                elif text[i] == "'":
                    i += 1
                    break
                else:
                    value.append(text[i])
                    i += 1
            raw_end = i
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                else:
                    value.append(text[i])
                    i += 1
            raw_end = i
        params[key] = "".join(value)
        safe.append(f"{key}={MASK}" if key in SECRET_KEYWORDS else text[start:raw_end].replace(" = ", "="))
    return ConnectionString(text, "keywords", params, " ".join(safe))


__all__ = ["KEYWORDS", "MASK", "URL_SCHEMES", "ConnectionString", "is_connection_string", "is_url", "parse",
           "redact"]
