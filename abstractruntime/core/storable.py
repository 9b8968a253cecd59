"""What canonical JSON can hold, and where a value it cannot hold goes wrong.

Shared by both canonical forms (:mod:`.canonical` and :mod:`.jcs`), which name the path to the
first unstorable part of a value in their errors (``run.vars.self``).
"""

from __future__ import annotations

import math
from typing import Any, Optional

SCALARS = (str, int, float, bool, type(None))
CONTAINERS = (dict, list, tuple)


def format_path(path: tuple[Any, ...], root: str = "") -> str:
    """``("run", "vars", "items", 3)`` → ``run.vars.items[3]`` (the root alone is ``root`` or ``(root)``)."""
    if not path:
        return root or "(root)"
    text = root
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def find_unstorable(value: Any, *, root: str = "") -> Optional[str]:
    """Describe the first part of ``value`` that canonical JSON cannot hold, or ``None``.

    Iterative, depth-first, tracking the containers on the current path (so a cycle is told
    apart from a container that is merely shared by two parents, which is fine). ``root``
    names ``value`` in the paths (``root="vars"``: ``vars.self``).
    """
    on_path: set[int] = set()
    # Each frame: (container, path, iterator over children); the container's id is in on_path.
    stack: list[tuple[Any, tuple[Any, ...], Any]] = []

    def enter(item: Any, path: tuple[Any, ...]) -> Optional[str]:
        if isinstance(item, CONTAINERS):
            if id(item) in on_path:
                return f"a reference cycle at {format_path(path, root)} (a container that contains itself)"
            on_path.add(id(item))
            children = item.items() if isinstance(item, dict) else enumerate(item)
            stack.append((item, path, iter(children)))
            return None
        if isinstance(item, float) and not math.isfinite(item):
            return f"{item!r} at {format_path(path, root)} (NaN and Infinity are not JSON)"
        if not isinstance(item, SCALARS):
            return f"a value of type {type(item).__name__} at {format_path(path, root)}, which is not JSON data"
        return None

    problem = enter(value, ())
    while problem is None and stack:
        container, path, children = stack[-1]
        step = next(children, None)
        if step is None:
            stack.pop()
            on_path.discard(id(container))
            continue
        key, child = step
        if isinstance(container, dict) and not isinstance(key, str):
            return f"a non-string object key {key!r} in {format_path(path, root)}"
        problem = enter(child, (*path, key))
    return problem
