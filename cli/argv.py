"""Global options accepted after the command: ``abstractruntime run wf.py --no-input``.

The option parser only knows global options before the command, so the root group hoists
them out of the command's arguments first. The command's own options are looked up so
that the value of one of them is never mistaken for a global option
(``resume RUN --answer -v`` answers "-v"), and a command's own ``--json`` stays its own.
"""

from __future__ import annotations

from typing import Any, Optional

# Global option -> whether it takes a value.
GLOBAL_OPTIONS: dict[str, bool] = {
    "--store": True,
    "--workflows": True,
    "--signing-key": True,
    "--adopt-unsigned": False,
    "--upgrade": False,
    "--json": False,
    "--no-input": False,
    "-q": False,
    "--quiet": False,
    "-v": False,
    "--verbose": False,
    "--prices": True,
    "--max-in-flight": True,
    "--stream": False,
}
_SHORT_FLAGS = {"q", "v"}


def _split_root(args: list[str]) -> int:
    """Index of the command name in ``args`` (after the root's own options)."""
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            return i + 1
        if not token.startswith("-") or token == "-":
            return i
        i += 2 if GLOBAL_OPTIONS.get(token) else 1
    return i


def command_start(args: list[str]) -> int:
    """Index of the command name in ``args``: after the root's global options (and their values)."""
    return _split_root(args)


def _own_options(command: Any) -> tuple[set[str], set[str]]:
    """(every option name of ``command``, the names that take a value)."""
    names: set[str] = set()
    valued: set[str] = set()
    for param in getattr(command, "params", []):
        opts = [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
        if not any(o.startswith("-") for o in opts):
            continue  # an argument
        names.update(opts)
        if not getattr(param, "is_flag", False) and not getattr(param, "count", False):
            valued.update(getattr(param, "opts", []))
    return names, valued


def _global_token(token: str, own: set[str]) -> Optional[str]:
    """The global option ``token`` names (``None`` if it is not one the command lacks)."""
    name = token.split("=", 1)[0] if token.startswith("--") else token
    if name in GLOBAL_OPTIONS and name not in own:
        return name
    # Bundled short flags such as -qv.
    if len(token) > 2 and token[0] == "-" and token[1] != "-" and set(token[1:]) <= _SHORT_FLAGS:
        if not any(f"-{c}" in own for c in token[1:]):
            return token
    return None


def hoist_global_options(group: Any, ctx: Any, args: list[str]) -> list[str]:
    """``args`` with global options found after the command moved before it."""
    start = _split_root(args)
    if start >= len(args):
        return args
    command: Any = group
    i = start
    # Walk down sub-groups (`runs show`, `snapshot create` ...) to the command that runs.
    while i < len(args) and hasattr(command, "get_command"):
        if args[i].startswith("-"):
            break  # options between a group and its command (`runs --json list`)
        sub = command.get_command(ctx, args[i])
        if sub is None:
            return args  # an unknown command: let the parser say so
        command = sub
        i += 1
    own, valued = _own_options(command)
    kept: list[str] = args[:i]
    hoisted: list[str] = []
    j = i
    while j < len(args):
        token = args[j]
        if token == "--":
            kept.extend(args[j:])
            break
        name = _global_token(token, own)
        if name is not None:
            hoisted.append(token)
            if GLOBAL_OPTIONS.get(name) and "=" not in token and j + 1 < len(args):
                hoisted.append(args[j + 1])
                j += 1
        else:
            kept.append(token)
            if token in valued and j + 1 < len(args):
                kept.append(args[j + 1])  # the option's value, whatever it looks like
                j += 1
        j += 1
    if not hoisted:
        return args
    return kept[:start] + hoisted + kept[start:]


def wants_json(args: list[str]) -> bool:
    """Whether ``--json`` appears among the options (before a ``--``)."""
    for token in args:
        if token == "--":
            return False
        if token == "--json":
            return True
    return False


__all__ = ["GLOBAL_OPTIONS", "command_start", "hoist_global_options", "wants_json"]
