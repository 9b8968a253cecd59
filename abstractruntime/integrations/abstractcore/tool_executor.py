"""Tool executors behind the ``tool_calls`` effect.

An executor has ``execute(*, tool_calls) -> dict`` and answers in one of two shapes::

    {"mode": "executed", "results": [{"call_id", "name", "success", "output", "error"}, ...]}
    {"mode": "passthrough", "tool_calls": [{"name", "arguments", "call_id"}, ...]}

Trust is by registration: an executor runs only the tools it was given. A call to any
other name, or with arguments that do not fit the function, is a *failed result for that
call* — the other calls still run and the effect itself succeeds.

- :class:`LocalToolExecutor` — plain Python callables; needs nothing but the standard library.
- :class:`AbstractCoreToolExecutor` — AbstractCore's ``ToolRegistry`` (schema-aware argument
  coercion); a private registry per executor, or AbstractCore's global registry when built
  without tools.
- :class:`PassthroughToolExecutor` — runs nothing; the run waits for a host to execute (or
  refuse) the calls and resume with the results.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import typing
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, Union

from ...core.drive import Request, run_coroutine, settle_in_thread
from ...core.errors import InvalidInputError
from ._support import import_abstractcore, jsonable, normalize_tool_calls
from .logging import get_logger

logger = get_logger(__name__)

ToolsArg = Union[Mapping[str, Callable[..., Any]], Iterable[Callable[..., Any]]]

_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean",
                               list: "array", tuple: "array", dict: "object"}


class ToolExecutor(Protocol):
    """What the ``tool_calls`` handler needs from an executor."""

    def execute(self, *, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
        """Run (or hand back) ``tool_calls``; see the module docstring for the result."""
        ...


def tool_name(fn: Callable[..., Any]) -> str:
    """The name a callable is registered under (AbstractCore ``@tool`` name, else ``__name__``)."""
    definition = getattr(fn, "_tool_definition", None)
    name = getattr(definition, "name", None) or getattr(fn, "__name__", None)
    if not name or name == "<lambda>":
        raise InvalidInputError(f"cannot name tool {fn!r}: pass a dict {{name: callable}}")
    return str(name)


def tools_by_name(tools: Optional[ToolsArg]) -> dict[str, Callable[..., Any]]:
    """``{name: callable}`` from a dict or a list of callables (duplicate names refused)."""
    if tools is None:
        return {}
    if isinstance(tools, Mapping):
        items = [(str(k), v) for k, v in tools.items()]
    else:
        items = [(tool_name(fn), fn) for fn in tools]
    out: dict[str, Callable[..., Any]] = {}
    for name, fn in items:
        if not callable(fn):
            raise InvalidInputError(f"tool {name!r} is not callable")
        if name in out:
            raise InvalidInputError(f"two tools are named {name!r}")
        out[name] = fn
    return out


def _schema_for(annotation: Any) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    if origin is Union or type(annotation).__name__ == "UnionType":
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _schema_for(options[0]) if len(options) == 1 else {}
    base = origin or annotation
    kind = _JSON_TYPES.get(base)
    return {"type": kind} if kind else {}


def describe_tool(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    """``{name, description, parameters}`` (JSON Schema) for a callable, from its signature."""
    doc = inspect.getdoc(fn) or ""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: describe without types
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        properties[pname] = _schema_for(hints.get(pname, param.annotation))
        if param.default is param.empty:
            required.append(pname)
    return {
        "name": name,
        "description": doc.splitlines()[0] if doc else name,
        "parameters": {"type": "object", "properties": properties, "required": required},
    }


def _result(call: Mapping[str, Any], *, success: bool, output: Any = None, error: Optional[str] = None
            ) -> dict[str, Any]:
    return {"call_id": call["call_id"], "name": call["name"], "success": success,
            "output": jsonable(output), "error": error}


def _bad_arguments(call: Mapping[str, Any]) -> Optional[str]:
    if not isinstance(call["arguments"], dict):
        return (f"Invalid arguments for tool '{call['name']}': expected a JSON object, "
                f"got {call['arguments']!r:.80}")
    return None


class LocalToolExecutor:
    """Runs registered Python callables in-process; no AbstractCore needed.

    ``async def`` tools of one ``tool_calls`` effect run concurrently (:meth:`aexecute`); plain
    tools run one after another, or — when ``max_threads`` > 0 (a workflow opts in with
    ``tool_threads = N``) — in a pool of that many threads. Results keep the calls' order.
    """

    def __init__(self, tools: Optional[ToolsArg] = None, *, max_threads: int = 0) -> None:
        self._tools = tools_by_name(tools)
        self.max_threads = max(0, int(max_threads))

    @property
    def concurrent(self) -> bool:
        """True when some calls may run at the same time (async tools, or a thread pool)."""
        return self.max_threads > 0 or any(inspect.iscoroutinefunction(fn) for fn in self._tools.values())

    async def aexecute(self, *, tool_calls: list[dict[str, Any]], done: Optional[Mapping[str, Any]] = None,
                       on_result: Optional[Callable[[str, dict[str, Any]], None]] = None) -> dict[str, Any]:
        """Run the calls concurrently where they can; ``done`` holds results already recorded
        (by ``call_id``: not run again), ``on_result(call_id, result)`` is told of each new one."""
        calls = normalize_tool_calls(tool_calls)
        threads = asyncio.Semaphore(self.max_threads) if self.max_threads else None
        known = dict(done or {})

        async def one(call: dict[str, Any]) -> dict[str, Any]:
            if call["call_id"] in known:
                return dict(known[call["call_id"]])
            fn = self._tools.get(call["name"])
            if fn is not None and inspect.iscoroutinefunction(fn):
                result = await self._arun(call, fn)
            elif threads is not None:
                async with threads:
                    # A thread cannot be interrupted: a cancelled effect waits for its tools to end
                    # and records what they returned, so no later attempt runs them beside these.
                    waiting = Request()
                    result = await settle_in_thread(waiting, self._run, call)
                if waiting.interrupted:
                    if on_result is not None:
                        on_result(call["call_id"], result)
                    raise asyncio.CancelledError
            else:
                result = self._run(call)
            if on_result is not None:
                on_result(call["call_id"], result)
            return result

        if threads is None and not any(inspect.iscoroutinefunction(self._tools.get(c["name"])) for c in calls):
            results = [await one(call) for call in calls]  # nothing to overlap: keep the calls' order
        else:
            tasks = [asyncio.ensure_future(one(call)) for call in calls]
            try:
                results = list(await asyncio.gather(*tasks))
            except asyncio.CancelledError:
                # Every call ends before the cancellation goes on (a tool in a thread runs to its
                # end and is recorded): gather alone would stop waiting at the first cancelled call.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        return {"mode": "executed", "results": results}

    async def _arun(self, call: dict[str, Any], fn: Callable[..., Any]) -> dict[str, Any]:
        problem = _bad_arguments(call)
        if problem:
            return _result(call, success=False, error=problem)
        try:
            output = await fn(**call["arguments"])
        except TypeError as exc:
            return _result(call, success=False, error=f"Invalid arguments for tool '{call['name']}': {exc}")
        except Exception as exc:
            logger.warning("tool raised", tool=call["name"], error_type=type(exc).__name__)
            return _result(call, success=False, error=f"Tool '{call['name']}' raised {type(exc).__name__}: {exc}")
        return _result(call, success=True, output=output)

    @property
    def tool_names(self) -> list[str]:
        """The names this executor will run (its allowlist)."""
        return list(self._tools)

    def tool_specs(self) -> list[dict[str, Any]]:
        """Tool definitions to pass as ``llm_call`` ``payload.tools``."""
        return [describe_tool(name, fn) for name, fn in self._tools.items()]

    def execute(self, *, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
        """Run each call in order; one failing call never stops the others."""
        return {"mode": "executed", "results": [self._run(call) for call in normalize_tool_calls(tool_calls)]}

    def _run(self, call: dict[str, Any]) -> dict[str, Any]:
        fn = self._tools.get(call["name"])
        if fn is None:
            allowed = ", ".join(sorted(self._tools)) or "none"
            return _result(call, success=False, error=f"Tool '{call['name']}' is not allowed here "
                                                       f"(registered tools: {allowed})")
        problem = _bad_arguments(call)
        if problem:
            return _result(call, success=False, error=problem)
        try:
            inspect.signature(fn).bind(**call["arguments"])
        except TypeError as exc:
            return _result(call, success=False, error=f"Invalid arguments for tool '{call['name']}': {exc}")
        except ValueError:
            pass  # builtins without a signature: let the call itself decide
        try:
            output = fn(**call["arguments"])
            if inspect.isawaitable(output):  # an async tool called from synchronous code
                output = run_coroutine(output)
        except Exception as exc:
            logger.warning("tool raised", tool=call["name"], error_type=type(exc).__name__)
            return _result(call, success=False, error=f"Tool '{call['name']}' raised {type(exc).__name__}: {exc}")
        return _result(call, success=True, output=output)


class AbstractCoreToolExecutor:
    """Runs tools through AbstractCore's ``ToolRegistry`` (needs the ``abstractcore`` extra).

    With ``tools`` (callables, ``@tool`` functions or a ``{name: callable}`` dict) the executor
    owns a private registry holding exactly those; with ``registry`` it uses that one; with
    neither it uses AbstractCore's global registry (``abstractcore.tools.registry.register_tool``).
    """

    def __init__(self, tools: Optional[ToolsArg] = None, *, registry: Any = None) -> None:
        import_abstractcore("Executing tools through AbstractCore")
        from abstractcore.tools import ToolCall, ToolDefinition  # noqa: PLC0415 - optional extra
        from abstractcore.tools.registry import ToolRegistry, get_registry  # noqa: PLC0415

        self._tool_call_cls = ToolCall
        if registry is not None:
            self._registry = registry
        elif tools is not None:
            self._registry = ToolRegistry()  # type: ignore[no-untyped-call]  # AbstractCore ships no types
            for name, fn in tools_by_name(tools).items():
                declared = getattr(fn, "_tool_definition", None)  # set by AbstractCore's @tool
                if declared is None or getattr(declared, "function", None) is None:
                    declared = ToolDefinition.from_function(fn, external_source="abstractruntime tools")
                # a dict key names the tool, whatever the function is called; copy, never mutate
                self._registry.register(dataclasses.replace(declared, name=name))
        else:
            self._registry = get_registry()

    @property
    def tool_names(self) -> list[str]:
        """The names this executor will run (its allowlist)."""
        return list(self._registry.get_tool_names())

    def tool_specs(self) -> list[dict[str, Any]]:
        """Tool definitions to pass as ``llm_call`` ``payload.tools`` (JSON Schema parameters)."""
        specs = []
        for definition in self._registry.list_tools():
            params = definition.parameters or {}
            required = [k for k, v in params.items() if not (isinstance(v, dict) and "default" in v)]
            properties = {k: {kk: vv for kk, vv in (v or {}).items() if kk != "default"} for k, v in params.items()}
            specs.append({"name": definition.name, "description": definition.description,
                          "parameters": {"type": "object", "properties": jsonable(properties),
                                         "required": required}})
        return specs

    def execute(self, *, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
        """Run each call through the registry; one failing call never stops the others."""
        results = []
        for call in normalize_tool_calls(tool_calls):
            problem = _bad_arguments(call)
            if problem:
                results.append(_result(call, success=False, error=problem))
                continue
            try:
                res = self._registry.execute_tool(
                    self._tool_call_cls(name=call["name"], arguments=dict(call["arguments"]), call_id=call["call_id"])
                )
            except Exception as exc:  # the registry catches tool errors itself; this is a last guard
                results.append(_result(call, success=False, error=f"Tool '{call['name']}' failed: {exc}"))
                continue
            success = bool(getattr(res, "success", False))
            error = getattr(res, "error", None)
            results.append(_result(call, success=success, output=getattr(res, "output", None),
                                   error=None if success else str(error or "tool failed")))
        return {"mode": "executed", "results": results}


class PassthroughToolExecutor:
    """Executes nothing: returns the calls so the run waits for a host to handle them."""

    def __init__(self, *, mode: str = "passthrough") -> None:
        if mode == "executed":
            raise InvalidInputError("a pass-through executor cannot report mode 'executed'")
        self._mode = mode

    def execute(self, *, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
        """``{"mode": "passthrough", "tool_calls": [...]}`` with normalised calls and stable ids."""
        return {"mode": self._mode, "tool_calls": normalize_tool_calls(tool_calls)}
