"""Load a workflow from a Python file: the ``abstractruntime run WORKFLOW.py`` contract.

A workflow file is an ordinary Python module that exposes its workflows — ``WorkflowSpec``
objects and functions decorated with ``@workflow``, found by what they are, whatever their
names (several per file: one is chosen by ``attr=``, an attribute or a workflow id, or by the
workflow id a run recorded; a file with one workflow, or one named ``workflow``, needs
neither) — and optionally::

    tools            {name: callable} or a list of callables (tool_calls effects)
    effect_handlers  {EffectType or its value: handler}

The file is read once; its bytes are hashed (sha256) **before** they are executed, and the
hash is exactly the code that runs. With ``expected_sha256`` (the hash a run recorded) other
bytes are refused with :class:`~abstractruntime.core.errors.WorkflowDriftError` before any
of them runs. The spec comes back with ``source=WorkflowSource(path=<absolute path>,
sha256=...)``: the runtime records the workflow id and the sha256 (never the path) and
refuses a changed file on ``tick``/``resume``.

Every failure is a :class:`~abstractruntime.core.errors.WorkflowLoadError` whose message
starts with ``<file>:<line>:`` when a line is known (syntax errors, exceptions raised while
importing, the assignment of an attribute that is not a WorkflowSpec).
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import os
import sys
import traceback
import types
from .core.fastclass import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .core.errors import WorkflowDriftError, WorkflowLoadError
from .core.spec import WorkflowSource, WorkflowSpec
from .transitions import check_targets

DEFAULT_ATTR = "workflow"

# Each load gets a fresh module name: loading a file twice (or two files with the same
# name) must never hand back a stale module from sys.modules.
_counter = itertools.count(1)


@dataclass(frozen=True)
class LoadedWorkflow:
    """A workflow file after import: the spec (with its source), tools and handlers."""

    workflow: WorkflowSpec
    path: Path
    sha256: str
    module: types.ModuleType
    tools: Any = None
    effect_handlers: Optional[dict[Any, Callable[..., Any]]] = None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (``WorkflowLoadError`` if it cannot be read)."""
    return hashlib.sha256(_read(Path(path))).hexdigest()


def read_source(path: str | os.PathLike[str]) -> bytes:
    """A workflow file's bytes (``WorkflowLoadError`` naming it if it cannot be read)."""
    return _read(Path(path))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise WorkflowLoadError(f"{path}: workflow file not found", path=str(path)) from None
    except IsADirectoryError:
        raise WorkflowLoadError(f"{path}: is a directory, not a workflow file", path=str(path)) from None
    except OSError as exc:
        raise WorkflowLoadError(f"{path}: cannot read workflow file ({exc.strerror or exc})",
                                path=str(path)) from None


def _line_of_assignment(source: bytes, name: str) -> Optional[int]:
    """The line where the module assigns ``name`` at top level (for error messages)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return node.lineno
        for target in targets:
            if isinstance(target, ast.Name) and target.id == name:
                return node.lineno
    return None


def _import_error_line(exc: BaseException, path: Path) -> Optional[int]:
    """The deepest traceback line that lies in the workflow file itself."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == str(path):
            line = frame.lineno
    return line


def _execute(path: Path, source: bytes) -> types.ModuleType:
    """Compile and run the file's bytes as a fresh module."""
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise WorkflowLoadError(f"{path}:{exc.lineno}: syntax error: {exc.msg}",
                                path=str(path), line=exc.lineno) from None
    except ValueError as exc:  # e.g. NUL bytes in the source
        raise WorkflowLoadError(f"{path}: cannot compile: {exc}", path=str(path)) from None
    name = f"abstractruntime_workflow_{next(_counter)}_{path.stem.replace('-', '_')}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    # Registered while it runs so dataclasses, pickling and typing can find the module.
    sys.modules[name] = module
    # The file's own directory goes first on sys.path, so a workflow can import its helpers.
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        exec(code, module.__dict__)
    except (Exception, SystemExit) as exc:  # a file calling sys.exit() must not end the caller
        sys.modules.pop(name, None)
        line = _import_error_line(exc, path)
        where = f"{path}:{line}" if line is not None else str(path)
        raise WorkflowLoadError(f"{where}: importing the workflow raised {type(exc).__name__}: {exc}",
                                path=str(path), line=line) from exc
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module


def _as_spec(value: Any) -> Optional[WorkflowSpec]:
    """A WorkflowSpec, or a look-alike (same three fields) converted to one."""
    if isinstance(value, WorkflowSpec):
        return value
    fields = ("workflow_id", "entry_node", "nodes")
    if all(hasattr(value, f) for f in fields) and isinstance(value.nodes, dict):
        return WorkflowSpec(str(value.workflow_id), str(value.entry_node), dict(value.nodes))
    return None


def module_workflows(module: types.ModuleType, source: bytes, path: Path) -> list[tuple[str, WorkflowSpec]]:
    """The workflows a module exposes, found by what they are (a ``WorkflowSpec``, or a function
    decorated with ``@workflow``), whatever their names: ``(attribute, spec)``, the file's own
    first (defined in it, or declared in its source), each object once."""
    found = _found(module, source, path)
    return [(key, spec) for key, spec, own in found if own] + [(key, spec) for key, spec, own in found if not own]


def _found(module: types.ModuleType, source: bytes, path: Path) -> list[tuple[str, WorkflowSpec, bool]]:
    from .registry import declared_ids

    declared = set(declared_ids(source, path.stem))
    found: list[tuple[str, WorkflowSpec, bool]] = []
    seen: set[int] = set()
    for key, value in vars(module).items():
        if key.startswith("_") or id(value) in seen:
            continue
        spec = _as_spec(value)
        if spec is None:
            continue
        seen.add(id(value))
        fn = getattr(value, "fn", None)
        # Imported from another file (a child workflow, say): offered only when nothing is the file's own.
        own = getattr(fn, "__module__", None) == module.__name__ if fn is not None else spec.workflow_id in declared
        found.append((key, spec, own))
    return found


def _pick(module: types.ModuleType, path: Path, source: bytes, attr: Optional[str],
          workflow_id: Optional[str]) -> WorkflowSpec:
    """The spec named ``attr`` (an attribute, or a workflow id); without one, the spec whose id a run
    recorded (``workflow_id``), else ``workflow``, else the file's one workflow."""
    # What the module offers (its source parsed for the ids it declares) is looked at only when
    # the name asked for, or the default attribute, does not settle it.
    looked: list[list[tuple[str, WorkflowSpec, bool]]] = []

    def offered() -> list[tuple[str, WorkflowSpec, bool]]:
        if not looked:
            looked.append(_found(module, source, path))
        return looked[0]

    def own_first() -> list[tuple[str, WorkflowSpec]]:
        flagged = offered()
        return [(key, spec) for key, spec, own in flagged if own] + \
            [(key, spec) for key, spec, own in flagged if not own]

    if attr is not None:
        if hasattr(module, attr):
            return _spec_attribute(module, path, source, attr)
        by_id = [spec for _, spec in own_first() if spec.workflow_id == attr]
        if by_id:
            return by_id[0]
        raise WorkflowLoadError(f"{path}: defines no attribute '{attr}' (and no workflow with that id)", path=str(path))
    default = _as_spec(getattr(module, DEFAULT_ATTR, None))
    if workflow_id is not None:
        # A run names its workflow by id: the spec with that id, whatever its attribute.
        if default is not None and default.workflow_id == workflow_id:
            return default
        for _, spec in own_first():
            if spec.workflow_id == workflow_id:
                return spec
    if default is not None:
        return default
    found = own_first()
    own = [spec for _, spec, mine in offered() if mine] or [spec for _, spec in found]
    ids = list(dict.fromkeys(spec.workflow_id for spec in own))
    if len(ids) == 1:
        return own[0]
    if ids:
        raise WorkflowLoadError(f"{path}: defines several workflows ({', '.join(ids)}); choose one with --attr "
                                "NAME (an attribute or a workflow id)", path=str(path))
    value = getattr(module, DEFAULT_ATTR, None)
    if hasattr(module, DEFAULT_ATTR) and not _is_decorator(value):
        return _spec_attribute(module, path, source, DEFAULT_ATTR)
    raise WorkflowLoadError(f"{path}: defines no attribute '{DEFAULT_ATTR}' and no other workflow (a WorkflowSpec, "
                            "or a function decorated with @workflow)", path=str(path))


def _is_decorator(value: Any) -> bool:
    """True for ``abstractruntime.workflow`` itself (``from abstractruntime import workflow``)."""
    from .flow.decorator import workflow as decorator

    return value is decorator


def _spec_attribute(module: types.ModuleType, path: Path, source: bytes, name: str) -> WorkflowSpec:
    value = getattr(module, name)
    spec = _as_spec(value)
    if spec is None:
        line = _line_of_assignment(source, name)
        where = f"{path}:{line}" if line is not None else str(path)
        raise WorkflowLoadError(f"{where}: '{name}' is a {type(value).__name__}, not a WorkflowSpec",
                                path=str(path), line=line)
    return spec


def load_workflow_file(
    path: str | os.PathLike[str],
    *,
    attr: Optional[str] = None,
    workflow_id: Optional[str] = None,
    expected_sha256: Optional[str] = None,
    check: bool = True,
    allow_upgrade: bool = False,
) -> LoadedWorkflow:
    """Import a workflow file and return its spec (with ``source`` set), tools and handlers.

    ``attr`` names the spec attribute (default ``workflow``). When ``attr`` is not given and
    ``workflow_id`` is, a spec with that id is preferred (how ``resume`` finds the spec of a
    run started with ``--attr``). ``expected_sha256``: refuse (``WorkflowDriftError``) a
    file whose bytes hash otherwise, before any of its code runs. ``check`` (default) refuses
    a spec whose entry node, or a literal ``next_node`` its handlers' source names, is not
    one of its nodes (:func:`abstractruntime.transitions.check_targets`); a run continuing
    the very bytes it recorded skips it, so code a run already started under stays usable.
    ``allow_upgrade`` marks the source as an upgrade the operator allows
    (``WorkflowSource.upgrade``: the runtime accepts it for a run whose history fits the new code).
    """
    resolved = Path(path).expanduser().absolute()
    source = _read(resolved)
    sha = hashlib.sha256(source).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256:
        # The same bytes are hashed here and executed below: nothing else can slip in between.
        raise WorkflowDriftError(
            f"Workflow {resolved} changed since it was recorded (recorded sha256 {expected_sha256}, now {sha}); "
            "nothing of it was imported; pass --allow-drift to continue with the new code",
            recorded=expected_sha256, current=sha, path=str(resolved))
    module = _execute(resolved, source)
    spec = _pick(module, resolved, source, attr, workflow_id)
    if check:
        # The text read here is the text that ran: a file edited since is not what is checked.
        check_targets(spec, path=str(resolved), sources={str(resolved): source.decode("utf-8", "replace")})
    handlers = getattr(module, "effect_handlers", None)
    if handlers is not None and not isinstance(handlers, dict):
        line = _line_of_assignment(source, "effect_handlers")
        where = f"{resolved}:{line}" if line is not None else str(resolved)
        raise WorkflowLoadError(f"{where}: 'effect_handlers' must be a dict {{effect type: handler}}",
                                path=str(resolved), line=line)
    return LoadedWorkflow(
        workflow=spec.with_source(WorkflowSource(path=str(resolved), sha256=sha, upgrade=allow_upgrade)),
        path=resolved,
        sha256=sha,
        module=module,
        tools=getattr(module, "tools", None),
        effect_handlers=handlers,
    )


def load_workflows(path: str | os.PathLike[str], *,
                   allow_upgrade: bool = False) -> tuple[types.ModuleType, list[WorkflowSpec]]:
    """Import a workflow file the operator named and return every workflow it exposes (its own
    first), each with its ``source`` set (``allow_upgrade``: marked as an upgrade the operator allows)."""
    resolved = Path(path).expanduser().absolute()
    source = _read(resolved)
    sha = hashlib.sha256(source).hexdigest()
    module = _execute(resolved, source)
    origin = WorkflowSource(path=str(resolved), sha256=sha, upgrade=allow_upgrade)
    return module, [spec.with_source(origin) for _, spec in module_workflows(module, source, resolved)]


def load_workflow(path: str | os.PathLike[str], *, attr: Optional[str] = None) -> WorkflowSpec:
    """Just the spec of :func:`load_workflow_file`."""
    return load_workflow_file(path, attr=attr).workflow


__all__ = ["DEFAULT_ATTR", "LoadedWorkflow", "file_sha256", "load_workflow", "load_workflow_file", "load_workflows",
           "module_workflows", "read_source"]
