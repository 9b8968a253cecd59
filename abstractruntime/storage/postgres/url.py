"""PostgreSQL connection strings: recognising them and keeping passwords out of messages.

Credentials come only from the URL or the standard ``PG*`` environment variables (libpq
reads ``PGPASSWORD``, ``PGPASSFILE``, ``PGHOST`` ... itself). Whatever reaches a message,
an exception or ``--json`` output goes through :func:`redact` first.
"""

from __future__ import annotations

import re

URL_SCHEMES = ("postgresql://", "postgres://")

# user:password@ in a URL (the password runs to the last @ before the path: an unencoded @ in
# it must not leave its end visible).
_USERINFO = re.compile(r"(postgres(?:ql)?://[^:/?#@\s]*):[^\s/?#]*@", re.IGNORECASE)
# password=... in a key/value connection string or a query parameter.
_KEYWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def is_postgres_url(value: object) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` connection URL."""
    return isinstance(value, str) and value.strip().lower().startswith(URL_SCHEMES)


def redact(text: str) -> str:
    """``text`` with every password in a connection URL or ``password=`` pair replaced by ``***``."""
    text = _USERINFO.sub(r"\1:***@", text)
    return _KEYWORD.sub(r"\1***", text)


__all__ = ["URL_SCHEMES", "is_postgres_url", "redact"]
