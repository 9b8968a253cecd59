"""Loggers for the AbstractCore integration.

:func:`get_logger` returns a logger that takes structured fields as keyword arguments
(``log.warning("llm_call failed", attempt=2)``). Once AbstractCore has been imported (local
mode) it delegates to AbstractCore's structured logger so records line up with AbstractCore's
own; until then, or when AbstractCore is not installed, it writes to the standard library
logger of the same name. It never imports AbstractCore itself: asking for a logger must stay
free and must not reconfigure logging. Nothing here writes to stdout.
"""

from __future__ import annotations

import logging as _stdlib_logging
import sys
from typing import Any, Optional

_STRUCTURED_MODULE = "abstractcore.utils.structured_logging"


class IntegrationLogger:
    """A logger accepting ``**fields``; see the module docstring for where records go."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._stdlib = _stdlib_logging.getLogger(name)
        self._structured: Optional[Any] = None

    def _delegate(self) -> Optional[Any]:
        if self._structured is None:
            module = sys.modules.get(_STRUCTURED_MODULE)
            factory = getattr(module, "get_logger", None) if module is not None else None
            if factory is not None:
                try:
                    self._structured = factory(self.name)
                except Exception:  # a broken optional logger must never break a run
                    self._structured = None
        return self._structured

    def _log(self, level: int, message: str, fields: dict[str, Any]) -> None:
        structured = self._delegate()
        if structured is not None:
            method = getattr(structured, _stdlib_logging.getLevelName(level).lower(), None)
            if method is not None:
                try:
                    method(message, **fields)
                    return
                except Exception:
                    pass  # fall back to the stdlib logger below
        if self._stdlib.isEnabledFor(level):
            suffix = " ".join(f"{k}={v!r}" for k, v in fields.items())
            self._stdlib.log(level, f"{message} | {suffix}" if suffix else message)

    def debug(self, message: str, **fields: Any) -> None:
        """Log at DEBUG."""
        self._log(_stdlib_logging.DEBUG, message, fields)

    def info(self, message: str, **fields: Any) -> None:
        """Log at INFO."""
        self._log(_stdlib_logging.INFO, message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        """Log at WARNING."""
        self._log(_stdlib_logging.WARNING, message, fields)

    def error(self, message: str, **fields: Any) -> None:
        """Log at ERROR."""
        self._log(_stdlib_logging.ERROR, message, fields)


def get_logger(name: str) -> IntegrationLogger:
    """A structured-field logger named ``name`` (AbstractCore's when it is loaded, stdlib otherwise)."""
    return IntegrationLogger(name)
