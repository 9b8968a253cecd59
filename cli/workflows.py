"""Glue between workflow files and runtimes: load a file, build its runtime, find a run's file.

A workflow file may expose ``tools`` (``{name: callable}`` or a list of callables): its
``tool_calls`` effects then run those tools in-process. ``require_approval`` (a list of tool
names) makes a batch of calls that names one of them wait for ``tools approve`` instead of
running. ``effect_handlers`` it exposes are registered as given (they win over the tools
and LLM handlers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:  # the kernel is imported when a command needs it, not at startup
    from abstractruntime.loader import LoadedWorkflow

    from .llm import LLMConfig, LlmFlags

APPROVAL_ATTR = "require_approval"


class ApprovalGate:
    """A tool executor that runs calls locally unless a batch names a tool needing approval.

    Such a batch is passed through whole (nothing runs), so the run waits until an operator
    runs ``tools approve`` (optionally ``--only``) or ``tools deny``.
    """

    def __init__(self, inner: Any, require_approval: frozenset[str]) -> None:
        self.inner = inner
        self.require_approval = require_approval

    def execute(self, *, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
        """Run the batch with the inner executor, or hand it back for approval."""
        names = {c.get("name") for c in tool_calls if isinstance(c, dict)}
        if names & self.require_approval:
            return {"mode": "passthrough", "tool_calls": tool_calls}
        return self.inner.execute(tool_calls=tool_calls)


def tool_calls_handler(tools: Any) -> Callable[..., Any]:
    """A ``tool_calls`` effect handler that runs ``tools`` locally (``tools`` may be an executor)."""
    try:
        from abstractruntime.integrations.abstractcore.effect_handlers import make_tool_calls_handler
        from abstractruntime.integrations.abstractcore.tool_executor import LocalToolExecutor
    except ImportError:  # the integration package is optional; a minimal local runner suffices
        return _fallback_tool_calls_handler(tools)
    executor = tools if callable(getattr(tools, "execute", None)) else LocalToolExecutor(tools)
    return make_tool_calls_handler(tools=executor)


def approval_required(loaded: "LoadedWorkflow") -> frozenset[str]:
    """The tool names the workflow file lists in ``require_approval`` (checked)."""
    from abstractruntime.core.errors import WorkflowLoadError

    value = getattr(loaded.module, APPROVAL_ATTR, None)
    if value is None:
        return frozenset()
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise WorkflowLoadError(f"{loaded.path}: {APPROVAL_ATTR} must be a list of tool names",
                                path=str(loaded.path))
    return frozenset(value)


def local_executor(loaded: "LoadedWorkflow") -> Any:
    """An executor over the workflow file's ``tools`` (``None`` when it exposes none)."""
    if not loaded.tools:
        return None
    from abstractruntime.integrations.abstractcore import make_tool_executor

    # `tool_threads = N` in the workflow file runs its plain tools in a pool of N threads.
    return make_tool_executor(loaded.tools, max_threads=int(getattr(loaded.module, "tool_threads", 0) or 0))


def _gated(loaded: "LoadedWorkflow", executor: Any) -> Any:
    gate = approval_required(loaded)
    return ApprovalGate(executor, gate) if gate and executor is not None else executor


def _fallback_tool_calls_handler(tools: Any) -> Callable[..., Any]:
    from abstractruntime.core.runtime import EffectOutcome

    table = dict(tools) if isinstance(tools, dict) else {getattr(f, "__name__", repr(f)): f for f in tools}

    def handle(run: Any, effect: Any) -> Any:
        calls = (effect.payload or {}).get("tool_calls")
        if not isinstance(calls, list):
            return EffectOutcome.failed("tool_calls requires payload.tool_calls (a list)", retryable=False)
        results = []
        for i, call in enumerate(calls):
            name = call.get("name") if isinstance(call, dict) else None
            call_id = (call.get("call_id") if isinstance(call, dict) else None) or f"call_{i}"
            args = call.get("arguments") if isinstance(call, dict) else None
            fn = table.get(name)
            if fn is None:
                results.append({"call_id": call_id, "name": name, "success": False, "output": None,
                                "error": f"Tool '{name}' is not allowed here"})
                continue
            try:
                output = fn(**(args or {}))
                json.dumps(output)
                results.append({"call_id": call_id, "name": name, "success": True, "output": output, "error": None})
            except Exception as exc:  # a failing tool is a failed result, not a failed effect
                results.append({"call_id": call_id, "name": name, "success": False, "output": None,
                                "error": f"{type(exc).__name__}: {exc}"})
        return EffectOutcome.completed({"mode": "executed", "results": results})

    return handle


def handlers_for(loaded: "LoadedWorkflow", llm: Optional["LLMConfig"] = None) -> dict[Any, Any]:
    """Effect handlers for a workflow file: LLM mode or local tools, explicit handlers over them."""
    handlers: dict[Any, Any] = {}
    if llm is not None:
        from .llm import mode_handlers

        handlers.update(mode_handlers(llm, _gated(loaded, local_executor(loaded))))
    elif loaded.tools:
        gate = approval_required(loaded)
        handlers["tool_calls"] = tool_calls_handler(
            ApprovalGate(_plain_executor(loaded.tools), gate) if gate else loaded.tools)
    for key, handler in (loaded.effect_handlers or {}).items():
        handlers[getattr(key, "value", key)] = handler
    return handlers


def _plain_executor(tools: Any) -> Any:
    from abstractruntime.integrations.abstractcore import LocalToolExecutor

    return LocalToolExecutor(tools)


def runtime_for(store: Any, loaded: Optional["LoadedWorkflow"], llm: Optional["LLMConfig"] = None) -> Any:
    """A runtime over ``store`` with the workflow file's (and the LLM mode's) handlers registered.

    An effect with no handler here (an ``llm_call`` without ``--llm``) makes the run wait for
    one instead of failing it. With handlers that can fail (LLM mode, the file's tools or
    handlers) the effect policy is the AbstractCore factories' (an ``llm_call`` gets 3 attempts).
    """
    handlers = handlers_for(loaded, llm) if loaded else {}
    kwargs: dict[str, Any] = {"effect_handlers": handlers or None, "missing_handler": "wait"}
    if loaded is not None:
        # The workflow file may declare redaction rules of its own (redact_keys, redact_patterns).
        from abstractruntime.core.redaction import Redactor

        redactor = Redactor().for_workflow(loaded.module)
        if redactor is not None:
            kwargs["redactor"] = redactor
    if handlers:
        # Imported only here: plain workflows (the common, latency-sensitive case) do not need it.
        from abstractruntime.integrations.abstractcore.factory import default_effect_policy

        kwargs["effect_policy"] = default_effect_policy()
    return store.runtime(**kwargs)


def load(path: str | Path, *, attr: Optional[str] = None, workflow_id: Optional[str] = None) -> "LoadedWorkflow":
    """Load a workflow file (errors are :class:`WorkflowLoadError` naming file and line)."""
    from abstractruntime.loader import load_workflow_file

    return load_workflow_file(path, attr=attr, workflow_id=workflow_id)


def recorded_source(checkpoint: Any) -> Optional[str]:
    """The workflow file a run recorded in its checkpoint, if any."""
    return (checkpoint.workflow or {}).get("source")


def load_for_run(store: Any, run_id: str, *, workflow_file: Optional[str] = None,
                 attr: Optional[str] = None, llm: Optional["LlmFlags"] = None,
                 info: Optional[Callable[[str], None]] = None) -> tuple["LoadedWorkflow", Any]:
    """The workflow (from ``--workflow`` or the run's checkpoint) and a runtime for it.

    The LLM configuration is the one the run recorded, with ``llm`` (the options given to
    this command) over it; a changed configuration is recorded in the run's metadata.
    """
    from .llm import resolve_llm

    from abstractruntime.trust import chain_workflow, trusted_workflow_path

    plain = store.runtime()
    checkpoint = plain.get_checkpoint(run_id)
    metadata = getattr(checkpoint, "metadata", None) or {}
    config, changed = resolve_llm(llm, metadata.get("llm"))
    # Code is imported only from where the operator or the hash chain says, never run.json.
    path = trusted_workflow_path(run_id, checkpoint, chain_workflow(plain, run_id, checkpoint), workflow_file)
    if workflow_file is None and not Path(path).is_file():
        from abstractruntime.core.errors import WorkflowLoadError

        raise WorkflowLoadError(f"{path}: the workflow file run {run_id} recorded is not there; "
                                "pass --workflow FILE", path=path)
    loaded = load(path, attr=attr, workflow_id=checkpoint.run.workflow_id)
    if changed and config is not None:
        store.runtime().update_metadata(run_id, {"llm": config.to_metadata()})
        if info is not None:
            info(f"run {run_id}: recorded the new LLM configuration ({config.describe()})")
    return loaded, runtime_for(store, loaded, config)


def parse_vars(pairs: list[str], vars_json: Optional[str]) -> dict[str, Any]:
    """``--vars-json`` (an object) updated by ``--var key=value`` pairs.

    A ``--var`` value that parses as JSON (number, true, null, object...) is used as that
    value; anything else is the literal string.
    """
    from abstractruntime.core.errors import InvalidInputError

    result: dict[str, Any] = {}
    if vars_json is not None:
        value = parse_json(vars_json, "--vars-json")
        if not isinstance(value, dict):
            raise InvalidInputError("--vars-json must be a JSON object")
        result.update(value)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--var expects key=value, got {pair!r}")
        try:
            result[key] = json.loads(raw)
        except ValueError:
            result[key] = raw
    return result


def parse_json(text: str, what: str) -> Any:
    """Strict JSON (no NaN/Infinity, no duplicate keys); ``InvalidInputError`` naming ``what``."""
    from abstractruntime.core.errors import InvalidInputError
    from abstractruntime.storage.fsio import loads_strict

    try:
        return loads_strict(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None


__all__ = ["ApprovalGate", "approval_required", "local_executor", "handlers_for", "runtime_for", "load", "load_for_run", "recorded_source", "parse_vars", "parse_json",
           "tool_calls_handler"]
