"""Workflow files on the command line: load one, build its runtime, continue a run from its file.

The library does the work (:mod:`abstractruntime.workflow_files`: which file a run may import
— located through the operator's registry, :mod:`abstractruntime.registry` — its tools,
handlers and redaction rules); this module adds what only the command line has: the global
``--workflows`` entries, and the ``--llm`` options (:mod:`.llm`), resolved against the
configuration the run recorded and turned into the LLM mode's effect handlers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # the kernel is imported when a command needs it, not at startup
    from abstractruntime.loader import LoadedWorkflow
    from abstractruntime.registry import WorkflowFileRegistry
    from abstractruntime.workflow_files import LlmHandlers

    from abstractruntime.llm_config import LLMConfig, LlmFlags

    from .output import Settings


def _llm_handlers(llm: Optional["LLMConfig"]) -> Optional["LlmHandlers"]:
    """The handler builder of an LLM mode (``None`` without one)."""
    if llm is None:
        return None
    from .llm import mode_handlers

    return lambda tools: mode_handlers(llm, tools)


def handlers_for(loaded: "LoadedWorkflow", llm: Optional["LLMConfig"] = None) -> dict[Any, Any]:
    """Effect handlers for a workflow file: LLM mode or local tools, explicit handlers over them."""
    from abstractruntime.workflow_files import handlers_for as library_handlers_for

    return library_handlers_for(loaded, llm_handlers=_llm_handlers(llm))


def runtime_for(store: Any, loaded: Optional["LoadedWorkflow"], llm: Optional["LLMConfig"] = None) -> Any:
    """A runtime over ``store`` with the workflow file's (and the LLM mode's) handlers registered
    (:func:`abstractruntime.workflow_files.runtime_for`)."""
    from abstractruntime.workflow_files import runtime_for as library_runtime_for

    return equipped(library_runtime_for(store, loaded, llm_handlers=_llm_handlers(llm)), store)


def equipped(runtime: Any, store: Any) -> Any:
    """The runtime with the store's live channel, the in-flight limits of ``--max-in-flight``
    (``$ABSTRACTRUNTIME_MAX_IN_FLIGHT``) and, with ``$ABSTRACTRUNTIME_OTEL=1``, tracing
    (:func:`abstractruntime.equip.equip`)."""
    import os

    from abstractruntime.equip import LIMITS_ENV, equip, parse_limits

    raw = os.environ.get(LIMITS_ENV)
    tracing = os.environ.get("ABSTRACTRUNTIME_OTEL", "").strip().lower() in ("1", "true", "yes", "on")
    return equip(runtime, store, limits=parse_limits([raw]) if raw else None, tracing=tracing)


def load(path: str | Path, *, attr: Optional[str] = None, workflow_id: Optional[str] = None) -> "LoadedWorkflow":
    """Load a workflow file the operator named (errors are :class:`WorkflowLoadError` naming file and line)."""
    from abstractruntime.loader import load_workflow_file

    return load_workflow_file(path, attr=attr, workflow_id=workflow_id)


def registry(s: "Settings", store: Any) -> "WorkflowFileRegistry":
    """The operator's workflow registry for this command (``--workflows`` first; built once)."""
    if s._registry is None:
        from abstractruntime.workflow_files import registry_for

        s._registry = registry_for(store, s.workflows)
    return s._registry


def load_for_run(s: "Settings", store: Any, run_id: str, *, workflow_file: Optional[str] = None,
                 attr: Optional[str] = None, llm: Optional["LlmFlags"] = None,
                 allow_drift: bool = False) -> tuple["LoadedWorkflow", Any]:
    """The workflow (from ``--workflow`` or the registry) and a runtime for it.

    The LLM configuration is the one the run recorded, with ``llm`` (the options given to
    this command) over it; an API key goes only to a server the operator configured
    (:func:`abstractruntime.llm_config.llm_for_run`); a changed configuration is recorded in
    the run's metadata once the workflow has loaded.
    """
    from abstractruntime.workflow_files import load_for_run as library_load_for_run

    reader = store.runtime()
    checkpoint = reader.get_checkpoint(run_id)
    metadata = getattr(checkpoint, "metadata", None) or {}
    config: Optional["LLMConfig"] = None
    changed = False
    if llm is not None or metadata.get("llm") is not None:  # else there is no configuration to check or use
        from abstractruntime.llm_config import llm_for_run

        # Bad options and a key bound for another server fail before any code is imported.
        config, changed = llm_for_run(llm, metadata.get("llm"), run_id)
    loaded, runtime = library_load_for_run(store, run_id, workflow_file=workflow_file, attr=attr,
                                           llm_handlers=_llm_handlers(config), checkpoint=checkpoint,
                                           registry=registry(s, store), allow_drift=allow_drift,
                                           allow_upgrade=s.upgrade)
    s.debug(f"run {run_id}: workflow {loaded.workflow.workflow_id} from {loaded.path}")
    runtime = equipped(runtime, store)
    if changed and config is not None:
        reader.update_metadata(run_id, {"llm": config.to_metadata()})
        s.info(f"run {run_id}: recorded the new LLM configuration ({config.describe()})")
    return loaded, runtime


def source_for_snapshot(s: "Settings", store: Any, snapshot: Any, *, workflow_file: Optional[str] = None,
                        allow_drift: bool = False) -> Any:
    """The workflow file a restored or forked run records, located like a run's
    (:func:`abstractruntime.workflow_files.source_for_snapshot`); nothing is imported."""
    from abstractruntime.workflow_files import source_for_snapshot as library_source_for_snapshot

    return library_source_for_snapshot(snapshot, workflow_file=workflow_file, registry=registry(s, store),
                                       allow_drift=allow_drift)


def parse_vars(pairs: list[str], vars_json: Optional[str], text: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``--vars-json`` (an object) updated by ``--var key=value`` pairs.

    A ``--var`` value that parses as JSON (number, true, null, object...) is used as that
    value; anything else is the literal string. A key in ``text`` (an input the workflow
    declares as text) always takes the literal string: ``--var version=1.10`` stays ``"1.10"``.
    """
    from abstractruntime.core.errors import InvalidInputError
    from abstractruntime.core.json_codec import loads_strict

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
        if key in text:
            result[key] = raw
            continue
        try:
            result[key] = loads_strict(raw)  # NaN or a key given twice is not JSON: the literal text
        except (ValueError, RecursionError):
            result[key] = raw
    return result


def parse_json(text: str, what: str) -> Any:
    """Strict JSON (no NaN/Infinity, no duplicate keys); ``InvalidInputError`` naming ``what``."""
    from abstractruntime.core.errors import InvalidInputError
    from abstractruntime.core.json_codec import loads_strict

    try:
        return loads_strict(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None


__all__ = ["equipped", "handlers_for", "runtime_for", "load", "load_for_run", "registry", "source_for_snapshot", "parse_vars",
           "parse_json"]
