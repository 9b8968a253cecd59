"""Glue between workflow files and runtimes: load a file, build its runtime, find a run's file.

A workflow file's ``tools`` and ``require_approval`` become its ``tool_calls`` handler
(:mod:`abstractruntime.integrations.abstractcore.workflow_tools`); ``effect_handlers`` it
exposes are registered as given (they win over the tools and LLM handlers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:  # the kernel is imported when a command needs it, not at startup
    from abstractruntime.loader import LoadedWorkflow

    from .llm import LLMConfig, LlmFlags

def handlers_for(loaded: "LoadedWorkflow", llm: Optional["LLMConfig"] = None) -> dict[Any, Any]:
    """Effect handlers for a workflow file: LLM mode or local tools, explicit handlers over them."""
    handlers: dict[Any, Any] = {}
    if llm is not None:
        from abstractruntime.integrations.abstractcore.workflow_tools import gated_executor

        from .llm import mode_handlers

        handlers.update(mode_handlers(llm, gated_executor(loaded)))
    elif loaded.tools:
        from abstractruntime.integrations.abstractcore.workflow_tools import workflow_tools_handler

        handlers["tool_calls"] = workflow_tools_handler(loaded)
    for key, handler in (loaded.effect_handlers or {}).items():
        handlers[getattr(key, "value", key)] = handler
    return handlers


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


__all__ = ["handlers_for", "runtime_for", "load", "load_for_run", "recorded_source", "parse_vars", "parse_json"]
