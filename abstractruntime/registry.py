"""The workflow registry: which file holds a workflow's code, as the operator configured it.

Data — a ledger, a checkpoint, a snapshot, a database row — names a workflow by its id and the
sha256 of its source, never by a path to import from: anyone who can write the store could
name any file. The file comes from the operator, outside the store:

1. a file the operator names for one command (the CLI's ``--workflow FILE``, or the file given
   to ``run``): nothing is looked up (:mod:`abstractruntime.workflow_files`);
2. the entries given to :meth:`WorkflowFileRegistry.configured` (the CLI's ``--workflows``);
3. ``$ABSTRACTRUNTIME_WORKFLOWS``: entries separated by ``os.pathsep``;
4. ``workflows = [...]`` in the ``[tool.abstractruntime]`` table of the nearest
   ``pyproject.toml`` that has one, from the current directory upward; its entries are
   relative to that file. A file writable by anyone, in a directory writable by anyone (such
   as /tmp), or owned by another user than the one running (or root) is refused: the walk
   upward may pass through a shared directory.

Sources 2–4 add up. An entry is a file, a directory (its ``*.py`` files, not recursive) or a
glob (``**`` matches any depth); a directory or glob skips names starting with ``_``
(helpers, ``__init__.py``) and anything under an excluded directory (the store). An entry
that matches nothing adds nothing.

A file's ids are read **without importing it**: the literal first argument (or
``workflow_id=``) of each ``WorkflowSpec(...)`` call, and of each ``@workflow("id")``
decorator (a bare ``@workflow`` declares the function's name), whatever the names they are
bound to; a file may declare several. A file that declares none (or cannot be parsed) is
known by its name without ``.py``.

:meth:`WorkflowFileRegistry.locate` finds the file for a run: among the files registered for
its id, the one whose bytes hash to the sha256 the run recorded. No such file is
:class:`~abstractruntime.core.errors.WorkflowDriftError` (nothing imported) unless drift is
allowed and exactly one file is registered for the id; an id no file declares is
:class:`~abstractruntime.core.errors.WorkflowNotRegisteredError` naming the three ways to
register one. The loader hashes the bytes again right before it imports them
(:func:`abstractruntime.loader.load_workflow_file`), so a file changed in between is refused too.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import importlib
import os
from .core.fastclass import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from .core.errors import WorkflowDriftError, WorkflowLoadError, WorkflowNotRegisteredError

WORKFLOWS_ENV = "ABSTRACTRUNTIME_WORKFLOWS"
"""The environment variable listing registry entries (``os.pathsep``-separated)."""

PYPROJECT = "pyproject.toml"
_SPEC_CALLS = frozenset({"WorkflowSpec"})
_DECORATORS = frozenset({"workflow"})

HOW_TO_REGISTER = ("name its file with --workflow FILE, or register it with --workflows DIR|GLOB or "
                   f"${WORKFLOWS_ENV}, or list it in `workflows = [...]` under [tool.abstractruntime] in "
                   "your project's pyproject.toml")
"""The three ways to register a workflow file, as every "not registered" message says them."""


def _name_of(func: ast.expr) -> Optional[str]:
    """``WorkflowSpec`` for ``WorkflowSpec``, ``ar.WorkflowSpec`` and ``a.b.WorkflowSpec``."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _literal_id(call: ast.Call) -> Optional[str]:
    """The call's first positional argument or ``workflow_id=``, when it is a string literal."""
    value: Optional[ast.expr] = call.args[0] if call.args else None
    for keyword in call.keywords:
        if keyword.arg == "workflow_id":
            value = keyword.value
    if isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value:
        return value.value
    return None


def declared_ids(source: str | bytes, stem: str) -> tuple[str, ...]:
    """The workflow ids a file's source declares, found by parsing it (never importing it).

    Literal ids of ``WorkflowSpec(...)`` calls and ``@workflow("id")`` decorators, in source
    order, each once; ``(stem,)`` (the file name without ``.py``) when there is none or the
    source does not parse.
    """
    raw = source.encode("utf-8", "replace") if isinstance(source, str) else source
    if b"WorkflowSpec" not in raw and b"workflow" not in raw:
        return (stem,)  # cheap: a helper module, not worth parsing
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return (stem,)
    decorators = set(_DECORATORS) | _aliases(tree)
    found: list[tuple[int, int, Optional[str]]] = []
    inner: set[int] = set()  # ``workflow("id")`` of a ``workflow("id")(fn)``: counted with its call
    decorating = {id(d) for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for d in n.decorator_list}  # ``@workflow(...)``: counted with its function
    for node in ast.walk(tree):  # breadth first: a call is seen before the calls inside it
        if isinstance(node, ast.Call) and _name_of(node.func) in _SPEC_CALLS:
            found.append((node.lineno, node.col_offset, _literal_id(node)))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Call) \
                and _name_of(node.func.func) in decorators:
            # deploy = workflow("deploy")(fn): the literal id, else the function's name
            inner.add(id(node.func))
            named = _literal_id(node.func) if node.func.args or any(
                k.arg == "workflow_id" for k in node.func.keywords) else _arg_name(node)
            found.append((node.lineno, node.col_offset, named))
        elif isinstance(node, ast.Call) and id(node) not in inner and id(node) not in decorating \
                and _name_of(node.func) in decorators:
            # deploy = workflow(fn): the function's name
            found.append((node.lineno, node.col_offset, _arg_name(node)))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and _name_of(deco.func) in decorators:
                    # @workflow("id"), or @workflow() / @workflow(node=...): the function's name
                    named = _literal_id(deco) if deco.args or any(k.arg == "workflow_id" for k in deco.keywords) \
                        else node.name
                    found.append((deco.lineno, deco.col_offset, named))
                elif _name_of(deco) in decorators:  # bare @workflow: the function's name
                    found.append((deco.lineno, deco.col_offset, node.name))
    found.sort(key=lambda item: (item[0], item[1]))  # source order
    ids = tuple(dict.fromkeys(i for _, _, i in found if i))
    return ids or (stem,)


def _arg_name(call: ast.Call) -> Optional[str]:
    """The name of a call's first argument when it is a plain name (``workflow(deploy_fn)``)."""
    first = call.args[0] if call.args else None
    return first.id if isinstance(first, ast.Name) else None


def _aliases(tree: ast.Module) -> set[str]:
    """Local names of ``abstractruntime``'s ``workflow`` decorator (``from abstractruntime import workflow as wf``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("abstractruntime"):
            names.update(a.asname for a in node.names if a.name == "workflow" and a.asname)
    return names


@dataclass(frozen=True)
class RegisteredFile:
    """One workflow file of the registry: where it is, the ids it declares, its sha256 when scanned."""

    path: Path
    workflow_ids: tuple[str, ...]
    sha256: str


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _expand(entry: str, base: Path) -> list[Path]:
    """The files one registry entry lists (see the module docstring), sorted."""
    raw = os.path.expanduser(entry.strip())
    if not raw:
        return []
    pattern = raw if os.path.isabs(raw) else str(base / raw)
    if glob.has_magic(pattern):
        matches = [Path(p) for p in glob.glob(pattern, recursive=True)]
        listed = [m for m in matches if m.is_file() and m.suffix == ".py" and not m.name.startswith("_")]
        for folder in (m for m in matches if m.is_dir()):
            listed.extend(_folder(folder))
        return sorted(set(listed))
    path = Path(pattern)
    if path.is_dir():
        return _folder(path)
    return [path] if path.is_file() else []


def _folder(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if p.is_file() and not p.name.startswith("_"))


def _toml_loads(text: str) -> dict[str, Any]:
    """Parse TOML with the standard library's ``tomllib`` (Python 3.11+), else ``tomli`` if installed."""
    for name in ("tomllib", "tomli"):
        try:
            toml: Any = importlib.import_module(name)
        except ImportError:
            continue
        loaded: dict[str, Any] = toml.loads(text)
        return loaded
    raise WorkflowLoadError("reading [tool.abstractruntime] from pyproject.toml needs Python 3.11 or the tomli "
                            f"package; use --workflows or ${WORKFLOWS_ENV} instead")


def _check_owner(path: Path) -> None:
    """Refuse a configuration file someone else could have planted or edited: the walk upward
    may pass through a shared directory such as /tmp (what git's ``safe.directory`` guards)."""
    getuid = getattr(os, "geteuid", None)
    if getuid is None:  # pragma: no cover - not POSIX
        return
    info, folder = path.stat(), path.parent.stat()
    uid = getuid()
    if info.st_mode & 0o002 or folder.st_mode & 0o002 or (uid != 0 and info.st_uid not in (uid, 0)):
        raise WorkflowLoadError(f"{path}: its [tool.abstractruntime] is not trusted: the file or its directory is "
                                f"writable by anyone, or the file is another user's (uid {info.st_uid}); use "
                                f"--workflows or ${WORKFLOWS_ENV}", path=str(path))


def pyproject_table(start: Optional[Path] = None) -> tuple[Optional[Path], dict[str, Any]]:
    """``(pyproject.toml, its [tool.abstractruntime] table)`` of the nearest ``pyproject.toml`` from
    ``start`` (default: the current directory) upward that has one; ``(None, {})`` when there is none.

    Raises :class:`WorkflowLoadError` naming the file when it is not valid TOML, or when it (or its
    directory) could have been planted or edited by someone else.
    """
    here = (start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        candidate = folder / PYPROJECT
        if not candidate.is_file():
            continue
        try:
            text = candidate.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WorkflowLoadError(f"{candidate}: cannot read it ({exc})", path=str(candidate)) from None
        if "abstractruntime" not in text:
            continue  # cheap: most pyproject.toml files are not ours to parse
        try:
            doc = _toml_loads(text)
        except ValueError as exc:  # tomllib.TOMLDecodeError
            raise WorkflowLoadError(f"{candidate}: not valid TOML ({exc})", path=str(candidate)) from None
        table = doc.get("tool", {}).get("abstractruntime") if isinstance(doc.get("tool"), dict) else None
        if not isinstance(table, dict):
            continue
        _check_owner(candidate)
        return candidate, table
    return None, {}


def pyproject_upgrades(start: Optional[Path] = None) -> tuple[Optional[Path], "bool | frozenset[str]"]:
    """The ``upgrades`` setting of the nearest ``[tool.abstractruntime]``: ``true`` (every workflow),
    or the workflow ids whose runs may continue with a changed file when their history fits it."""
    return _upgrades_of(*pyproject_table(start))


def _upgrades_of(found: Optional[Path], table: dict[str, Any]) -> tuple[Optional[Path], "bool | frozenset[str]"]:
    value = table.get("upgrades", False)
    if isinstance(value, bool):
        return found, value
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WorkflowLoadError(f"{found}: [tool.abstractruntime] upgrades must be true, false or a list of workflow "
                                "ids", path=str(found))
    return found, frozenset(value)


def pyproject_entries(start: Optional[Path] = None) -> tuple[Optional[Path], list[str]]:
    """``(pyproject.toml, its workflows entries)`` of the nearest ``pyproject.toml`` from ``start``
    (default: the current directory) upward that has a ``[tool.abstractruntime]`` table;
    ``(None, [])`` when there is none.

    Raises :class:`WorkflowLoadError` naming the file when it is not valid TOML or its
    ``workflows`` is not a list of strings.
    """
    return _entries_of(*pyproject_table(start))


def _entries_of(candidate: Optional[Path], table: dict[str, Any]) -> tuple[Optional[Path], list[str]]:
    if candidate is None:
        return None, []
    entries = table.get("workflows", [])
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise WorkflowLoadError(f"{candidate}: [tool.abstractruntime] workflows must be a list of paths "
                                "or globs", path=str(candidate))
    return candidate, list(entries)


@dataclass(frozen=True)
class _Source:
    """Where a list of registry entries came from."""

    label: str          # "--workflows", "$ABSTRACTRUNTIME_WORKFLOWS", a pyproject.toml path, "entries"
    base: Path          # what relative entries are relative to
    entries: tuple[str, ...]


class WorkflowFileRegistry:
    """Workflow ids mapped to the files that declare them (see the module docstring).

    ``entries`` are files, directories or globs, relative to ``base`` (default: the current
    directory); ``exclude`` lists directories never registered from (give the store's).
    :meth:`configured` builds the operator's registry from every configured source. Files
    are scanned once, on first use.
    """

    def __init__(self, entries: Iterable[str] = (), *, base: Optional[Path] = None,
                 exclude: Iterable[str | os.PathLike[str]] = ()) -> None:
        self._sources = [_Source("entries", (base or Path.cwd()).absolute(), tuple(entries))]
        self._pyproject_from: Optional[Path] = None
        self._exclude = [Path(p).absolute().resolve() for p in exclude]
        self._files: Optional[list[RegisteredFile]] = None
        # The nearest [tool.abstractruntime] table, read once per scan (the entries and the
        # upgrades setting of one command come from one reading of one file).
        self._pyproject: Optional[tuple[Optional[Path], dict[str, Any]]] = None

    @classmethod
    def configured(cls, entries: Sequence[str] = (), *, cwd: Optional[Path] = None,
                   environ: Optional[Mapping[str, str]] = None,
                   exclude: Iterable[str | os.PathLike[str]] = ()) -> "WorkflowFileRegistry":
        """The operator's registry: ``entries`` (the CLI's ``--workflows``), then
        ``$ABSTRACTRUNTIME_WORKFLOWS`` (from ``environ``, default ``os.environ``), then the
        ``[tool.abstractruntime] workflows`` of the nearest ``pyproject.toml`` from ``cwd``
        upward (read on first use)."""
        here = (cwd or Path.cwd()).absolute()
        env = os.environ if environ is None else environ
        from_env = tuple(p for p in env.get(WORKFLOWS_ENV, "").split(os.pathsep) if p.strip())
        registry = cls(exclude=exclude)
        registry._sources = [_Source("--workflows", here, tuple(entries)), _Source(f"${WORKFLOWS_ENV}", here, from_env)]
        registry._pyproject_from = here
        return registry

    def _pyproject_table(self) -> tuple[Optional[Path], dict[str, Any]]:
        if self._pyproject_from is None:
            return None, {}
        if self._pyproject is None:
            self._pyproject = pyproject_table(self._pyproject_from)
        return self._pyproject

    def _all_sources(self) -> list[_Source]:
        sources = list(self._sources)
        if self._pyproject_from is not None:
            found, entries = _entries_of(*self._pyproject_table())
            if found is not None:
                sources.append(_Source(str(found), found.parent, tuple(entries)))
        return sources

    def upgrades_allowed(self, workflow_id: str) -> bool:
        """Whether the operator's configuration allows upgrades for ``workflow_id``: its nearest
        ``[tool.abstractruntime]`` says ``upgrades = true`` or lists the id (the CLI's
        ``--upgrade`` allows them for one command)."""
        if self._pyproject_from is None:
            return False
        _, allowed = _upgrades_of(*self._pyproject_table())
        return allowed if isinstance(allowed, bool) else workflow_id in allowed

    def describe(self) -> str:
        """Where this registry looks, in one line (for messages)."""
        parts = [s.label if s.label.endswith(PYPROJECT) else f"{s.label} ({', '.join(s.entries)})"
                 for s in self._all_sources() if s.entries]
        return "; ".join(parts) or "nothing is registered"

    def files(self) -> list[RegisteredFile]:
        """Every registered file with its ids (scanned on first use: read and parsed, never imported)."""
        if self._files is None:
            seen: set[Path] = set()
            files: list[RegisteredFile] = []
            for source in self._all_sources():
                for entry in source.entries:
                    for path in _expand(entry, source.base):
                        real = path.absolute().resolve()
                        if real in seen or _under(real, self._exclude):
                            continue
                        seen.add(real)
                        try:
                            data = path.read_bytes()
                        except OSError:
                            continue  # unreadable: not registered
                        files.append(RegisteredFile(path.absolute(), declared_ids(data, path.stem),
                                                    hashlib.sha256(data).hexdigest()))
            self._files = files
        return self._files

    def ids(self) -> dict[str, list[Path]]:
        """``{workflow id: [its files]}``."""
        out: dict[str, list[Path]] = {}
        for entry in self.files():
            for workflow_id in entry.workflow_ids:
                out.setdefault(workflow_id, []).append(entry.path)
        return out

    def candidates(self, workflow_id: str) -> list[RegisteredFile]:
        """The registered files that declare ``workflow_id``."""
        return [f for f in self.files() if workflow_id in f.workflow_ids]

    def locate(self, workflow_id: str, sha256: Optional[str], *, allow_drift: bool = False,
               recorded_by: str = "the run") -> RegisteredFile:
        """The registered file for a run of ``workflow_id`` whose source hashed to ``sha256``.

        ``sha256=None`` (a run that recorded no hash) accepts the one file registered for the
        id. ``recorded_by`` names what recorded them in messages (``"run r1"``). Nothing is
        imported here.
        """
        whose = recorded_by
        scanned_before = self._files is not None
        found = self.candidates(workflow_id)
        if scanned_before and (not found or (sha256 is not None and sha256 not in {f.sha256 for f in found})):
            # Scanned before a file was added or deployed (a long-running worker): look again.
            self._files = self._pyproject = None
            found = self.candidates(workflow_id)
        if not found:
            raise WorkflowNotRegisteredError(
                workflow_id, message=f"workflow '{workflow_id}' ({whose}) is not registered: {HOW_TO_REGISTER} "
                                     f"(looked in: {self.describe()})")
        if sha256 is not None:
            for entry in found:
                if entry.sha256 == sha256:
                    return entry
        distinct = {entry.sha256 for entry in found}
        if sha256 is not None and not allow_drift:
            listed = ", ".join(f"{e.path} (sha256 {e.sha256})" for e in found)
            raise WorkflowDriftError(
                f"Workflow '{workflow_id}' changed since {whose} recorded it (recorded sha256 {sha256}; "
                f"registered: {listed}); nothing of it was imported; pass --allow-drift to continue with the "
                "new code, or --upgrade to continue with it if the run's history fits it",
                recorded=sha256, current=found[0].sha256 if len(distinct) == 1 else sorted(distinct))
        if len(distinct) > 1:
            listed = ", ".join(str(e.path) for e in found)
            why = "none has the recorded sha256" if sha256 is not None else f"{whose} recorded no sha256 to choose by"
            raise WorkflowLoadError(f"workflow '{workflow_id}' ({whose}): {len(found)} different registered files "
                                    f"declare it ({listed}) and {why}; name one with --workflow FILE")
        return found[0]


__all__ = ["HOW_TO_REGISTER", "PYPROJECT", "RegisteredFile", "WORKFLOWS_ENV", "WorkflowFileRegistry",
           "declared_ids", "pyproject_entries", "pyproject_table", "pyproject_upgrades"]
