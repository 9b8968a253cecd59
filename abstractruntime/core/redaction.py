"""Secret redaction, applied to ledger records before they are hashed and written.

A value is redacted when its key, lower-cased with ``-`` read as ``_``, is one of
:data:`DEFAULT_SECRET_KEYS` or ends with one of :data:`DEFAULT_SECRET_SUFFIXES`. The
replacement is the string ``"[REDACTED]"``. Redaction applies to what the ledger records
(effect payloads, results, resume payloads, start vars); the checkpoint keeps the run's
live variables, so keep secrets out of ``vars`` (pass them to effect handlers instead).
"""

from __future__ import annotations

from typing import Any, Iterable

REDACTED = "[REDACTED]"

DEFAULT_SECRET_KEYS: frozenset[str] = frozenset(
    {
        "api_key", "apikey", "authorization", "proxy_authorization", "password", "passwd",
        "secret", "token", "access_token", "refresh_token", "id_token", "client_secret",
        "private_key", "cookie", "set_cookie", "x_api_key", "credentials", "passphrase",
    }
)
DEFAULT_SECRET_SUFFIXES: tuple[str, ...] = ("_api_key", "_token", "_secret", "_password")


class Redactor:
    """Replaces values under secret-looking keys, recursively, returning a new structure."""

    def __init__(
        self,
        *,
        keys: Iterable[str] = DEFAULT_SECRET_KEYS,
        suffixes: Iterable[str] = DEFAULT_SECRET_SUFFIXES,
        extra_keys: Iterable[str] = (),
    ) -> None:
        self.keys = frozenset(_normalise(k) for k in [*keys, *extra_keys])
        self.suffixes = tuple(_normalise(s) for s in suffixes)

    def is_secret_key(self, key: object) -> bool:
        """True when values under ``key`` must never be recorded."""
        if not isinstance(key, str):
            return False
        norm = _normalise(key)
        return norm in self.keys or norm.endswith(self.suffixes)

    def redact(self, value: Any) -> Any:
        """A copy of ``value`` with secrets replaced by ``"[REDACTED]"``."""
        if isinstance(value, dict):
            return {
                k: (REDACTED if self.is_secret_key(k) and v is not None else self.redact(v))
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.redact(v) for v in value]
        return value


def _normalise(key: str) -> str:
    return key.strip().lower().replace("-", "_")


class NoRedaction(Redactor):
    """Records everything as given (for tests of the redaction itself)."""

    def redact(self, value: Any) -> Any:
        return value
