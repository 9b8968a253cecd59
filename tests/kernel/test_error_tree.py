"""The hierarchy drawn in ``core/errors.py``'s docstring is the hierarchy of the classes.

The drawing is what readers consult to choose an ``except``; a class added, moved or given
another code without redrawing it would mislead them, so the drawing is parsed and compared.
"""

from __future__ import annotations

import inspect
import re

from abstractruntime.core import errors

LINE = re.compile(r"^(?P<indent>[ │]*)(?:[├└]── )?(?P<name>[A-Za-z]+)(?: \((?P<builtin>[A-Za-z, ]+)\))?"
                  r"(?:[^A-Za-z_]+(?P<code>[a-z_]+))?")


def drawn_tree() -> dict[str, tuple[str | None, str, str | None]]:
    """``{class name: (drawn parent, drawn code, drawn builtin base)}`` from the docstring."""
    doc = errors.__doc__ or ""
    block = doc.split("Hierarchy::", 1)[1].strip("\n").splitlines()[1:]  # skip the header line
    tree: dict[str, tuple[str | None, str, str | None]] = {}
    stack: list[tuple[int, str]] = []
    for raw in block:
        if not raw.strip():
            break
        line = raw[4:]  # the docstring's indentation
        match = LINE.match(line)
        assert match, raw
        depth = len(match["indent"]) // 4
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else "AbstractRuntimeError"
        tree[match["name"]] = (parent, match["code"] or "", match["builtin"])
        stack.append((depth, match["name"]))
    return tree


def real_tree() -> dict[str, tuple[str | None, str, str | None]]:
    """The same, from the classes of the module."""
    tree: dict[str, tuple[str | None, str, str | None]] = {}
    for name, cls in inspect.getmembers(errors, inspect.isclass):
        if (not issubclass(cls, errors.AbstractRuntimeError) or cls.__module__ != errors.__name__
                or cls is errors.AbstractRuntimeError):
            continue
        ours = [base for base in cls.__bases__ if issubclass(base, errors.AbstractRuntimeError)]
        builtins_ = [base.__name__ for base in cls.__bases__ if not issubclass(base, errors.AbstractRuntimeError)
                     and base is not Exception]
        parent = ours[0].__name__ if ours else None
        # A builtin is drawn where it enters the tree, not on every descendant.
        inherited = any(b in {c.__name__ for p in ours for c in p.__mro__} for b in builtins_)
        builtin = ", ".join(builtins_) if builtins_ and not inherited else None
        tree[name] = (parent, cls.code, builtin)
    return tree


def test_the_drawn_hierarchy_is_the_class_hierarchy() -> None:
    drawn, real = drawn_tree(), real_tree()
    assert set(drawn) == set(real), (sorted(set(real) - set(drawn)), sorted(set(drawn) - set(real)))
    for name, (parent, code, builtin) in real.items():
        drawn_parent, drawn_code, drawn_builtin = drawn[name]
        assert drawn_parent == parent, f"{name}: drawn under {drawn_parent}, derives from {parent}"
        assert drawn_code == code, f"{name}: drawn with code {drawn_code}, has {code}"
        assert drawn_builtin == builtin, f"{name}: drawn with builtin {drawn_builtin}, has {builtin}"


def test_every_code_names_one_kind_of_error() -> None:
    """Codes are unique, except a refinement that keeps its parent's code on purpose (callers matching
    ``corrupt_record`` must see a misplaced checkpoint too)."""
    seen: dict[str, type] = {}
    for cls in vars(errors).values():
        if not (inspect.isclass(cls) and issubclass(cls, errors.AbstractRuntimeError)):
            continue
        first = seen.setdefault(cls.code, cls)
        assert first is cls or issubclass(cls, first) or issubclass(first, cls), (cls, first)
