"""Loggers the kernel imports ``logging`` for only when it writes a message (standard library only).

The kernel logs rarely (a torn tail, a damaged index, an observer that raised), and importing
``logging`` costs milliseconds on every start-up; :func:`get_logger` returns a stand-in that
resolves ``logging.getLogger(name)`` on first use, so configuration done by the application
(handlers, levels, ``caplog``) applies exactly as to a logger made at import.
"""

from __future__ import annotations

from typing import Any


class LazyLogger:
    """``logging.getLogger(name)``, looked up when one of its methods is first used."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        import logging  # first message only; later calls find it in sys.modules

        return getattr(logging.getLogger(self.name), attr)

    def __repr__(self) -> str:
        return f"<LazyLogger {self.name}>"


def get_logger(name: str) -> LazyLogger:
    """A logger for ``name`` that does not import ``logging`` until a message is written."""
    return LazyLogger(name)


__all__ = ["LazyLogger", "get_logger"]
