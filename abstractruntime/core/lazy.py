"""The names a module's code uses, imported into it when first needed, all at once.

``from abstractruntime import Runtime, FileStore`` should cost little more than starting Python:
a class can exist without the modules its methods call (the ledger, the WAL, hashing, the
query index). Such a module lists what its code uses in a :class:`LazyNames` table, repeats
the same imports under ``if TYPE_CHECKING:`` for type checkers (a test checks that the two
agree), and calls :meth:`LazyNames.load` where it is first used (``Runtime.__init__``). Its
module ``__getattr__`` hands the names to code that imports them from it, importing only the
module that has the name asked for.

A load binds every name or none: an import that fails (a broken install) raises its
``ImportError`` and leaves the module as it was, so the next use tries again and fails the
same way, never with a ``NameError`` half-way through a method.
"""

from __future__ import annotations

# typing.TYPE_CHECKING without importing typing (type checkers read any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["LazyNames"]


class LazyNames:
    """A table ``{module: names}`` bound into ``namespace`` (a module's ``globals()``) on first use.

    A module named with no names (``"inspect": ()``) is bound itself, under its last part.
    Relative module names (``".drive"``) are resolved against ``package``.
    """

    def __init__(self, namespace: dict[str, Any], package: str, table: dict[str, tuple[str, ...]]) -> None:
        self._namespace = namespace
        self._package = package
        self.table = table
        self._module_of = {name: module for module, names in table.items()
                           for name in (names or (module.rpartition(".")[2],))}
        self.names = frozenset(self._module_of)
        self.loaded = False

    def load(self) -> None:
        """Import every module of the table and bind its names (once; later calls return at once)."""
        if self.loaded:
            return
        found: dict[str, Any] = {}
        for module_name in self.table:
            found.update(self._import(module_name))
        # Only now: a failed import above binds nothing. A name already there stays (bound by
        # __getattr__ to the same object, or replaced by a caller: a test's patch holds).
        for name, value in found.items():
            self._namespace.setdefault(name, value)
        self.loaded = True

    def attribute(self, name: str) -> Any:
        """``name`` for the module's ``__getattr__``: imports the one module of the table that has
        it (a constant stays readable, to report an error, when another module cannot load)."""
        module_name = self._module_of.get(name)
        if module_name is None:
            raise AttributeError(f"module {self._namespace.get('__name__')!r} has no attribute {name!r}")
        if name not in self._namespace:
            self._namespace.update(self._import(module_name))
        return self._namespace[name]

    def _import(self, module_name: str) -> dict[str, Any]:
        import sys

        absolute = _absolute(module_name, self._package)
        # __import__ rather than importlib.import_module: the same import, through the
        # interpreter's own path, which ``python -X importtime`` reports (import_module's is not).
        __import__(absolute)
        module = sys.modules[absolute]
        names = self.table[module_name]
        if not names:
            return {module_name.rpartition(".")[2]: module}
        found: dict[str, Any] = {}
        for name in names:
            try:
                found[name] = getattr(module, name)
            except AttributeError:
                raise ImportError(f"cannot import name {name!r} from {module.__name__!r}") from None
        return found


def _absolute(module_name: str, package: str) -> str:
    """``module_name`` made absolute: ``".drive"`` in ``abstractruntime.core`` is
    ``abstractruntime.core.drive``, ``"..errors"`` is ``abstractruntime.errors``."""
    if not module_name.startswith("."):
        return module_name
    rest = module_name.lstrip(".")
    parts = package.split(".")
    up = len(module_name) - len(rest) - 1
    if up >= len(parts):
        raise ImportError(f"attempted relative import beyond top-level package: {module_name!r} in {package!r}")
    base = ".".join(parts[: len(parts) - up])
    return f"{base}.{rest}" if rest else base
