"""The interactive ask_user prompt (only on a terminal, never with --no-input).

The prompt and choices are written to stderr with rich, as :class:`rich.text.Text`, so
text like ``[y/n]`` is shown as typed; the answer is read from stdin. An answer picks a
choice by its number, its text in any case, or a unique prefix of it: a prompt that shows
``[y/n]`` over the choices ``yes``/``no`` takes ``y``.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from abstractruntime.core.waits import match_choice


def _read_line() -> Optional[str]:
    sys.stderr.write("> ")
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        return None  # EOF (Ctrl-D): no answer
    return line.rstrip("\r\n")


def ask(wait: Any) -> Optional[dict[str, Any]]:
    """Ask the wait's prompt; ``{"answer": text}``, or ``None`` if the user gave none (EOF)."""
    # rich only once a person is asked: commands that merely stop at a wait never load it.
    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True, highlight=False)
    console.print(Text(wait.prompt or "Answer:", style="bold"))
    choices = list(wait.choices or [])
    for i, choice in enumerate(choices, 1):
        console.print(Text.assemble(f"  {i}) ", Text(choice)))
    if choices and wait.allow_free_text:
        console.print(Text("  (a number, a choice, or your own answer)", style="dim"))
    while True:
        line = _read_line()
        if line is None:
            return None
        text = line.strip()
        if choices and text.isdigit() and 1 <= int(text) <= len(choices):
            return {"answer": choices[int(text) - 1]}
        picked = match_choice(choices, bool(wait.allow_free_text), text)
        if choices and picked in choices:
            return {"answer": picked}
        if choices and not wait.allow_free_text:
            console.print(Text("Please answer with one of: " + ", ".join(choices)
                               + " (or its number, or the first letters of one)"))
            continue
        if not text:
            continue
        return {"answer": line}


__all__ = ["ask"]
