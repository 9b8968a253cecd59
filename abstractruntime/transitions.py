"""Where a workflow's nodes go, read from their handlers' source (nothing is called).

A node handler returns a ``StepPlan``; the node it goes to next is the plan's ``next_node``
(or a wait's ``resume_to_node``). This module reads each handler's source with :mod:`ast`
and follows only those values: ``StepPlan(..., next_node=X)`` (or ``X`` as its third
positional argument), ``resume_to_node=X`` and a ``{"resume_to_node": X}`` payload entry.
Inside ``X`` it follows what clearly flows into it:

- a string literal, both branches of ``a if c else b``, each operand of ``a or b``, and a
  local name assigned such values — these are *literal* targets, which the loader checks
  name existing nodes (:func:`check_targets`);
- a module-level string, a lookup in a dict (``ROUTES[k]``, ``ROUTES.get(k, "x")``, the dict
  literal or a module-level dict) — *table* targets, drawn as edges only when they name a
  node.

A string that only appears elsewhere in a handler (an output, a message) is no edge. A node
*can complete* when its handler passes ``complete_output`` something other than ``None``.
Handlers without readable source (builtins, callable objects) contribute nothing.
"""

from __future__ import annotations

import ast
import linecache
from dataclasses import field
from .core.fastclass import dataclass
from typing import Any, Iterator, Mapping, Optional

from .core.errors import WorkflowLoadError

_DEPTH = 8  # how many local names deep a value is followed (a = b; b = "x" ...)


@dataclass(frozen=True)
class Target:
    """A node name a handler may go to, and where its source says so."""

    name: str
    literal: bool  # a literal flowing into next_node/resume_to_node (not a table lookup)
    file: Optional[str] = None
    line: Optional[int] = None


@dataclass
class NodeReading:
    """What a node's handler source says: where it may go and whether it may complete."""

    node_id: str
    targets: list[Target] = field(default_factory=list)
    completes: bool = False
    readable: bool = False


def _function_of(handler: Any) -> Any:
    """The plain function behind a handler (bound methods, ``functools.partial``, wrappers)."""
    for _ in range(5):
        if hasattr(handler, "__code__"):
            return handler
        inner = getattr(handler, "__func__", None) or getattr(handler, "func", None) \
            or getattr(handler, "__wrapped__", None)
        if inner is None:
            return None
        handler = inner
    return None


def _parsed(filename: str, sources: Mapping[str, str], cache: dict[str, Optional[ast.Module]]) -> Optional[ast.Module]:
    if filename not in cache:
        text = sources.get(filename)
        if text is None:
            text = "".join(linecache.getlines(filename))
        try:
            cache[filename] = ast.parse(text, filename=filename) if text else None
        except (SyntaxError, ValueError):
            cache[filename] = None
    return cache[filename]


def _same_code(node: ast.Lambda, code: Any, filename: str) -> bool:
    """Whether the lambda at ``node`` compiles to ``code`` (tells lambdas on one line apart)."""
    try:
        compiled = compile(ast.fix_missing_locations(ast.Expression(body=node)), filename, "eval")
    except (SyntaxError, ValueError, TypeError):
        return False
    inner = [c for c in compiled.co_consts if hasattr(c, "co_code")]
    return bool(inner) and inner[0].co_code == code.co_code and inner[0].co_consts == code.co_consts


def _definition(fn: Any, sources: Mapping[str, str], cache: dict[str, Optional[ast.Module]]) -> Optional[ast.AST]:
    """The ``def`` or ``lambda`` node that defines ``fn`` in its file."""
    code = fn.__code__
    tree = _parsed(code.co_filename, sources, cache)
    if tree is None:
        return None
    first = code.co_firstlineno
    lambdas: list[ast.Lambda] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == code.co_name:
            starts = [node.lineno] + [d.lineno for d in node.decorator_list]
            if first in starts:
                return node
        elif isinstance(node, ast.Lambda) and code.co_name == "<lambda>" and node.lineno == first:
            lambdas.append(node)
    if len(lambdas) == 1:
        return lambdas[0]
    matching = [node for node in lambdas if _same_code(node, code, code.co_filename)]
    return matching[0] if matching else None


class _Reader:
    """Follows the values that flow into ``next_node`` within one handler."""

    def __init__(self, definition: ast.AST, fn: Any) -> None:
        self.definition = definition
        self.globals: Mapping[str, Any] = getattr(fn, "__globals__", {})
        self.filename: str = fn.__code__.co_filename
        self.closure: dict[str, Any] = {}
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            try:
                self.closure[name] = cell.cell_contents
            except ValueError:  # an empty cell: not bound yet
                continue
        self.assigned: dict[str, list[ast.expr]] = {}
        for node in ast.walk(definition):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.assigned.setdefault(target.id, []).append(node.value)
            elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and isinstance(node.target, ast.Name) \
                    and node.value is not None:
                self.assigned.setdefault(node.target.id, []).append(node.value)

    def values(self, expr: ast.expr, depth: int = 0, literal: bool = True) -> Iterator[Target]:
        """The names ``expr`` may evaluate to."""
        if depth > _DEPTH:
            return
        if isinstance(expr, ast.Constant):
            if isinstance(expr.value, str):
                yield Target(expr.value, literal, self.filename, expr.lineno)
        elif isinstance(expr, ast.IfExp):
            yield from self.values(expr.body, depth + 1, literal)
            yield from self.values(expr.orelse, depth + 1, literal)
        elif isinstance(expr, ast.BoolOp):
            for value in expr.values:
                yield from self.values(value, depth + 1, literal)
        elif isinstance(expr, ast.Name):
            if expr.id in self.assigned:
                for value in self.assigned[expr.id]:
                    yield from self.values(value, depth + 1, literal)
            elif isinstance(self.closure.get(expr.id), str):
                # A handler made by a factory (make_node("b")): the value it was made with.
                yield Target(self.closure[expr.id], literal, self.filename, expr.lineno)
            elif isinstance(self.globals.get(expr.id), str):
                yield Target(self.globals[expr.id], False, self.filename, expr.lineno)
        elif isinstance(expr, ast.Subscript):
            yield from self._table(expr.value, expr.lineno, depth)
        elif isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "get":
            yield from self._table(expr.func.value, expr.lineno, depth)
            for default in expr.args[1:2]:
                yield from self.values(default, depth + 1, False)

    def _table(self, expr: ast.expr, line: int, depth: int) -> Iterator[Target]:
        """The string values of a dict looked up in (a literal, a local or a module-level one)."""
        if isinstance(expr, ast.Dict):
            for value in expr.values:
                yield from self.values(value, depth + 1, False)
        elif isinstance(expr, ast.Name):
            if expr.id in self.assigned:
                for value in self.assigned[expr.id]:
                    yield from self._table(value, line, depth + 1)
            else:
                table = self.closure.get(expr.id, self.globals.get(expr.id))
                if isinstance(table, dict):
                    for value in table.values():
                        if isinstance(value, str):
                            yield Target(value, False, self.filename, line)

    def read(self, node_id: str) -> NodeReading:
        """Every target the handler names, and whether it can complete."""
        reading = NodeReading(node_id, readable=True)
        for node in ast.walk(self.definition):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg in ("next_node", "resume_to_node"):
                        reading.targets.extend(self.values(keyword.value))
                    elif keyword.arg == "complete_output" and not _is_none(keyword.value):
                        reading.completes = True
                if _calls_step_plan(node):
                    if len(node.args) >= 3:
                        reading.targets.extend(self.values(node.args[2]))
                    if len(node.args) >= 4 and not _is_none(node.args[3]):
                        reading.completes = True
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "resume_to_node":
                        reading.targets.extend(self.values(value))
        return reading


def _is_none(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Constant) and expr.value is None


def _calls_step_plan(call: ast.Call) -> bool:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return name == "StepPlan"


def read_nodes(spec: Any, *, sources: Optional[Mapping[str, str]] = None) -> list[NodeReading]:
    """One :class:`NodeReading` per node of ``spec``, in node order.

    ``sources`` maps a file name to the text that ran (the loader passes the bytes it hashed
    and executed, so a file edited since is not read); other files are read through
    :mod:`linecache`.
    """
    cache: dict[str, Optional[ast.Module]] = {}
    readings = []
    for node_id, handler in spec.nodes.items():
        fn = _function_of(handler)
        definition = _definition(fn, sources or {}, cache) if fn is not None else None
        if definition is None:
            readings.append(NodeReading(node_id))
            continue
        reader = _Reader(definition, fn)
        readings.append(reader.read(node_id))
    return readings


def check_targets(spec: Any, *, path: str, sources: Optional[Mapping[str, str]] = None) -> None:
    """Refuse a workflow whose entry node, or a literal ``next_node``, names no node of it.

    Raises :class:`WorkflowLoadError` with a one-line message naming the file (and line) and
    the node. Table lookups are not checked: only what the source says for certain.
    """
    nodes = list(spec.nodes)
    known = ", ".join(repr(n) for n in nodes[:12]) + (" ..." if len(nodes) > 12 else "")
    if spec.entry_node not in spec.nodes:
        raise WorkflowLoadError(f"{path}: workflow '{spec.workflow_id}': entry node {spec.entry_node!r} is not one "
                                f"of its nodes ({known or 'none'})", path=path, node=spec.entry_node)
    for reading in read_nodes(spec, sources=sources):
        for target in reading.targets:
            if target.literal and target.name not in spec.nodes:
                where = f"{target.file}:{target.line}" if target.file and target.line else path
                raise WorkflowLoadError(
                    f"{where}: node {reading.node_id!r} of workflow '{spec.workflow_id}' goes to {target.name!r}, "
                    f"which is not one of its nodes ({known})", path=target.file or path, line=target.line,
                    node=reading.node_id, target=target.name)


__all__ = ["NodeReading", "Target", "check_targets", "read_nodes"]
