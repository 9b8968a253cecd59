"""Continue a run from its workflow file: which file to import, and a runtime with the file's handlers.

What ``tick``, ``resume``, ``retry``, ``worker`` and ``tools approve`` do before they advance a
run, as a library call::

    from abstractruntime.storage.store import open_store
    from abstractruntime.workflow_files import load_for_run

    store = open_store(".abstractruntime", create=False)   # or a postgresql:// URL
    loaded, runtime = load_for_run(store, run_id)
    state = runtime.tick(workflow=loaded.workflow, run_id=run_id)

- **Which file.** Code is imported only from where the operator or the run's hash chain says
  (:mod:`abstractruntime.trust`), never on the word of ``run.json``: the ``workflow_file``
  the caller names, else the file the chain recorded, if it lies in the directory the run was
  started from or in ``$ABSTRACTRUNTIME_WORKFLOWS``. A recorded file that is gone is a
  :class:`~abstractruntime.core.errors.WorkflowLoadError` asking for ``workflow_file``.
- **Which handlers.** A workflow file's ``tools`` (behind its ``require_approval`` gate) serve
  its ``tool_calls`` effects; its ``effect_handlers`` are registered as given and win over
  everything else; its ``redact_keys`` / ``redact_patterns`` become the runtime's redactor.
  ``llm_handlers`` adds an LLM mode's handlers: a callable given the file's tool executor
  (``None`` when the file has no tools) that returns ``{"llm_call": ..., "tool_calls": ...}``,
  e.g. ``lambda tools: build_mode_handlers(mode="local", provider=..., model=..., tools=tools)``
  from :mod:`abstractruntime.integrations.abstractcore`.
- **What a missing handler does.** The runtime is built with ``missing_handler="wait"``: an
  effect nobody serves (an ``llm_call`` without an LLM mode) makes the run wait for one
  instead of failing it. With handlers that can fail, the effect policy is AbstractCore's
  default (an ``llm_call`` gets 3 attempts).

The CLI's ``cli/workflows.py`` is a thin layer over this module (it resolves the ``--llm``
options into ``llm_handlers`` and records a changed LLM configuration in the run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .core.errors import WorkflowLoadError
from .loader import LoadedWorkflow, load_workflow_file

LlmHandlers = Callable[[Any], Mapping[Any, Callable[..., Any]]]
"""Builds an LLM mode's effect handlers from the workflow file's tool executor (or ``None``)."""


def recorded_source(checkpoint: Any) -> Optional[str]:
    """The workflow file a run's checkpoint names (a cache: use it to group runs, never to import code)."""
    return (getattr(checkpoint, "workflow", None) or {}).get("source")


def _by_value(handlers: Mapping[Any, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Effect handlers keyed by the effect type's value (``EffectType.LLM_CALL`` → ``"llm_call"``)."""
    return {getattr(key, "value", key): handler for key, handler in handlers.items()}


def handlers_for(loaded: LoadedWorkflow, *, llm_handlers: Optional[LlmHandlers] = None) -> dict[str, Any]:
    """The effect handlers a workflow file asks for, keyed by effect type value.

    With ``llm_handlers``: what it returns for the file's gated tool executor; without: a
    ``tool_calls`` handler running the file's ``tools`` (when it has any). The file's own
    ``effect_handlers`` go over either.
    """
    handlers: dict[str, Any] = {}
    if llm_handlers is not None:
        from .integrations.abstractcore.workflow_tools import gated_executor

        handlers.update(_by_value(llm_handlers(gated_executor(loaded))))
    elif loaded.tools:
        from .integrations.abstractcore.workflow_tools import workflow_tools_handler

        handlers["tool_calls"] = workflow_tools_handler(loaded)
    handlers.update(_by_value(loaded.effect_handlers or {}))
    return handlers


def runtime_for(store: Any, loaded: Optional[LoadedWorkflow], *, llm_handlers: Optional[LlmHandlers] = None) -> Any:
    """A runtime over ``store`` (anything with ``runtime(**kwargs)``: a ``FileStore``, a
    ``PostgresStore``) with the workflow file's handlers and redaction rules registered.

    ``loaded=None`` gives a plain runtime whose effects without a handler wait for one.
    """
    handlers = handlers_for(loaded, llm_handlers=llm_handlers) if loaded is not None else {}
    kwargs: dict[str, Any] = {"effect_handlers": handlers or None, "missing_handler": "wait"}
    if loaded is not None:
        from .core.redaction import Redactor

        kwargs["redactor"] = Redactor().for_workflow(loaded.module)  # redact_keys, redact_patterns
    if handlers:
        # Imported only here: plain workflows (the common, latency-sensitive case) do not need it.
        from .integrations.abstractcore.factory import default_effect_policy

        kwargs["effect_policy"] = default_effect_policy()
    return store.runtime(**kwargs)


def workflow_file_for_run(runtime: Any, run_id: str, checkpoint: Any, *,
                          workflow_file: Optional[str | Path] = None) -> str:
    """The workflow file a command continuing ``run_id`` may import (see :mod:`abstractruntime.trust`).

    ``workflow_file`` is one the caller names; it is returned as given. Otherwise the file is
    the one the run's hash chain recorded, and it must still be there
    (:class:`WorkflowLoadError` naming it otherwise). ``runtime`` reads the run's ledger.
    """
    from .trust import chain_workflow, trusted_workflow_path

    explicit = str(workflow_file) if workflow_file is not None else None
    path = trusted_workflow_path(run_id, checkpoint, chain_workflow(runtime, run_id, checkpoint), explicit)
    if explicit is None and not Path(path).is_file():
        raise WorkflowLoadError(f"{path}: the workflow file run {run_id} recorded is not there; "
                                "pass --workflow FILE", path=path)
    return path


def load_for_run(store: Any, run_id: str, *, workflow_file: Optional[str | Path] = None, attr: Optional[str] = None,
                 llm_handlers: Optional[LlmHandlers] = None,
                 checkpoint: Any = None) -> tuple[LoadedWorkflow, Any]:
    """The workflow file of run ``run_id`` imported, and a runtime over ``store`` to continue it with.

    ``store`` is anything with ``runtime(**kwargs)`` (what
    :func:`~abstractruntime.storage.store.open_store` returns). ``workflow_file`` names the
    file instead of the one the run recorded; ``attr`` the spec's attribute in it (default:
    ``workflow``, or the spec whose id the run recorded). ``llm_handlers`` adds an LLM mode's
    handlers (see the module docstring). ``checkpoint`` is the run's current checkpoint when
    the caller already read it (``Runtime.get_checkpoint``); otherwise it is read here.

    Raises :class:`~abstractruntime.core.errors.RunNotFoundError` for an unknown run,
    :class:`WorkflowLoadError` when no file may or can be imported, and
    :class:`~abstractruntime.core.errors.VerificationFailedError` when ``run.json`` names
    another file than the hash chain.
    """
    plain = store.runtime()
    if checkpoint is None:
        checkpoint = plain.get_checkpoint(run_id)
    path = workflow_file_for_run(plain, run_id, checkpoint, workflow_file=workflow_file)
    loaded = load_workflow_file(path, attr=attr, workflow_id=checkpoint.run.workflow_id)
    return loaded, runtime_for(store, loaded, llm_handlers=llm_handlers)


__all__ = ["LlmHandlers", "handlers_for", "load_for_run", "recorded_source", "runtime_for", "workflow_file_for_run"]
