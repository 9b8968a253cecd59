"""Continue a run from its workflow file: which file to import, and a runtime with the file's handlers.

What ``tick``, ``resume``, ``retry``, ``worker``, ``emit`` and ``tools approve|deny`` do
before they advance a run, as a library call::

    from abstractruntime.storage.store import open_store
    from abstractruntime.workflow_files import load_for_run

    store = open_store(".abstractruntime", create=False)   # or a postgresql:// URL
    loaded, runtime = load_for_run(store, run_id)
    state = runtime.tick(workflow=loaded.workflow, run_id=run_id)

- **Which file.** Code is located by the operator, never by data. The run's hash chain says
  which workflow id and sha256 it recorded (:mod:`abstractruntime.trust`); the file is the
  ``workflow_file`` the caller names, else the one the operator's registry maps that id and
  sha256 to (:mod:`abstractruntime.registry`: ``--workflows``, ``$ABSTRACTRUNTIME_WORKFLOWS``,
  ``[tool.abstractruntime]`` in ``pyproject.toml``). Its bytes are hashed before they are
  imported: other bytes than the run recorded are refused with
  :class:`~abstractruntime.core.errors.WorkflowDriftError` before any of their code runs,
  unless ``allow_drift``. An id no registered file declares is
  :class:`~abstractruntime.core.errors.WorkflowNotRegisteredError` (how to register one in
  its message). A path recorded by older runs is never used.
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

The CLI's ``cli/workflows.py`` is a thin layer over this module (it builds the registry from
``--workflows``, resolves the ``--llm`` options into ``llm_handlers`` and records a changed LLM
configuration in the run).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from .core.errors import WorkflowDriftError, WorkflowLoadError
from .core.spec import WorkflowSource
from .loader import LoadedWorkflow, load_workflow_file, read_source

if TYPE_CHECKING:
    # Imported where used: starting a run from a file it was given needs neither the registry
    # (with glob and the source parser) nor the recorded-workflow checks.
    from .registry import WorkflowFileRegistry
    from .trust import RecordedWorkflow

LlmHandlers = Callable[[Any], Mapping[Any, Callable[..., Any]]]
"""Builds an LLM mode's effect handlers from the workflow file's tool executor (or ``None``)."""


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


def registry_for(store: Any, entries: Sequence[str] = ()) -> WorkflowFileRegistry:
    """The operator's registry (:meth:`WorkflowFileRegistry.configured`) with ``entries`` first,
    never listing a file inside ``store``'s directory."""
    root = getattr(store, "root", None)
    from .registry import WorkflowFileRegistry

    return WorkflowFileRegistry.configured(entries, exclude=[root] if root is not None else [])


def workflow_file_for_run(runtime: Any, run_id: str, checkpoint: Any, *,
                          workflow_file: Optional[str | Path] = None,
                          registry: Optional[WorkflowFileRegistry] = None,
                          allow_drift: bool = False) -> tuple[Path, RecordedWorkflow]:
    """The file a command continuing ``run_id`` may import, and the workflow the run recorded.

    ``workflow_file`` is one the caller names (returned as given, checked when loaded);
    otherwise ``registry`` (default: the operator's, :func:`registry_for`) locates the file by
    the id and sha256 the run's hash chain recorded. Nothing is imported here.
    """
    from .trust import recorded_workflow

    recorded = recorded_workflow(runtime, run_id, checkpoint)
    if workflow_file is not None:
        return Path(workflow_file), recorded
    found = (registry or registry_for(None)).locate(recorded.workflow_id, recorded.sha256,
                                                   allow_drift=allow_drift, recorded_by=f"run {run_id}")
    return found.path, recorded


def source_for_snapshot(snapshot: Any, *, workflow_file: Optional[str | Path] = None,
                        registry: Optional[WorkflowFileRegistry] = None,
                        allow_drift: bool = False) -> Optional[WorkflowSource]:
    """The workflow file a run restored or forked from ``snapshot`` records (its id and sha256).

    ``workflow_file`` is one the caller names (it must declare the snapshot's workflow id);
    otherwise ``registry`` (default: the operator's) locates the file by the workflow id and
    sha256 the snapshot recorded — never by a path written in the snapshot file. ``None`` when
    the snapshot recorded no workflow and no file is named. Files are hashed, never imported.
    """
    workflow_id = str((snapshot.run_state or {}).get("workflow_id") or "")
    if workflow_file is not None:
        path = Path(workflow_file).expanduser().absolute()
        data = read_source(path)
        from .registry import declared_ids

        if workflow_id not in declared_ids(data, path.stem):
            raise WorkflowLoadError(f"{path}: declares no workflow '{workflow_id}' (the snapshot's)", path=str(path))
        return WorkflowSource(str(path), hashlib.sha256(data).hexdigest())
    if not snapshot.workflow:
        return None
    found = (registry or registry_for(None)).locate(workflow_id, snapshot.workflow.get("sha256"),
                                                   allow_drift=allow_drift,
                                                   recorded_by=f"snapshot {snapshot.snapshot_id}")
    return WorkflowSource(str(found.path), found.sha256)


def load_for_run(store: Any, run_id: str, *, workflow_file: Optional[str | Path] = None, attr: Optional[str] = None,
                 llm_handlers: Optional[LlmHandlers] = None, checkpoint: Any = None,
                 registry: Optional[WorkflowFileRegistry] = None,
                 allow_drift: bool = False, allow_upgrade: bool = False) -> tuple[LoadedWorkflow, Any]:
    """The workflow file of run ``run_id`` imported, and a runtime over ``store`` to continue it with.

    ``store`` is anything with ``runtime(**kwargs)`` (what
    :func:`~abstractruntime.storage.store.open_store` returns). ``workflow_file`` names the
    file instead of the registry; ``registry`` replaces the operator's (default:
    :func:`registry_for` ``(store)``); ``attr`` the spec's attribute in the file (default:
    ``workflow``, or the spec whose id the run recorded). ``llm_handlers`` adds an LLM mode's
    handlers (see the module docstring). ``checkpoint`` is the run's current checkpoint when
    the caller already read it (``Runtime.get_checkpoint``); otherwise it is read here.
    ``allow_drift`` accepts a file whose sha256 is not the one the run recorded (pass it to
    ``tick``/``resume`` too, which record the change). ``allow_upgrade`` (or the registry's
    ``upgrades`` setting for the run's workflow) imports such a file as an *upgrade*: the runtime
    continues the run with it only when the run's history fits the new code (a code-first run's
    recorded steps replay; a graph run's nodes still exist), and records the new sha256.

    Raises :class:`~abstractruntime.core.errors.RunNotFoundError` for an unknown run,
    :class:`~abstractruntime.core.errors.WorkflowNotRegisteredError` when no file is
    registered for the run's workflow, :class:`~abstractruntime.core.errors.WorkflowDriftError`
    (nothing imported) when the file's bytes are not the ones the run recorded,
    :class:`~abstractruntime.core.errors.WorkflowLoadError` when the file cannot be imported, and
    :class:`~abstractruntime.core.errors.VerificationFailedError` when ``run.json`` names
    another workflow than the hash chain.
    """
    plain = store.runtime()
    if checkpoint is None:
        checkpoint = plain.get_checkpoint(run_id)
    registry = registry or registry_for(store)
    from .trust import recorded_workflow

    recorded = recorded_workflow(plain, run_id, checkpoint)
    upgrade = allow_upgrade or registry.upgrades_allowed(recorded.workflow_id)
    path, recorded = workflow_file_for_run(plain, run_id, checkpoint, workflow_file=workflow_file,
                                           registry=registry, allow_drift=allow_drift or upgrade)
    expected = None if allow_drift or upgrade else recorded.sha256
    try:
        # The bytes the run recorded ran it so far: only other code (allow_drift) is checked anew.
        loaded = load_workflow_file(path, attr=attr, workflow_id=recorded.workflow_id, expected_sha256=expected,
                                    check=expected is None, allow_upgrade=upgrade)
    except WorkflowDriftError as exc:
        raise WorkflowDriftError(
            f"Workflow '{recorded.workflow_id}' ({exc.details.get('path', path)}) changed since run {run_id} recorded "
            f"it (recorded sha256 {exc.details.get('recorded')}, now {exc.details.get('current')}); nothing of it "
            "was imported; pass --allow-drift to continue with the new code, or --upgrade to continue with it if the "
            "run's history fits it", **exc.details) from None
    return loaded, runtime_for(store, loaded, llm_handlers=llm_handlers)


def schedule_resolver(store: Any, *, registry: Optional[WorkflowFileRegistry] = None,
                      llm_handlers: Optional[LlmHandlers] = None) -> Callable[[Any], tuple[Any, Any]]:
    """``resolve(schedule) -> (workflow, runtime)`` for
    :meth:`Schedules.fire_due <abstractruntime.scheduler.schedules.Schedules.fire_due>` and
    ``Scheduler(resolve_schedule=...)``: the file ``registry`` (default: the operator's,
    :func:`registry_for`) holds for the workflow id and sha256 the schedule recorded, hashed again
    before it is imported, and a runtime over ``store`` with its handlers. A schedule never names
    a path: an id no file declares is :class:`~abstractruntime.core.errors.WorkflowNotRegisteredError`,
    other bytes than the recorded ones :class:`~abstractruntime.core.errors.WorkflowDriftError`,
    and nothing is imported. Loaded once per workflow id and sha256.
    """
    found = registry or registry_for(store)
    cache: dict[tuple[str, str], tuple[Any, Any]] = {}

    def resolve(schedule: Any) -> tuple[Any, Any]:
        key = (schedule.workflow_id, schedule.sha256)
        if key not in cache:
            entry = found.locate(schedule.workflow_id, schedule.sha256, recorded_by=f"schedule {schedule.name}")
            loaded = load_workflow_file(entry.path, workflow_id=schedule.workflow_id, expected_sha256=schedule.sha256)
            if loaded.workflow.workflow_id != schedule.workflow_id:
                raise WorkflowLoadError(f"{entry.path}: its workflow is '{loaded.workflow.workflow_id}', not "
                                        f"'{schedule.workflow_id}' (schedule {schedule.name})", path=str(entry.path))
            cache[key] = (loaded.workflow, runtime_for(store, loaded, llm_handlers=llm_handlers))
        return cache[key]

    return resolve


__all__ = ["LlmHandlers", "handlers_for", "load_for_run", "registry_for", "runtime_for", "schedule_resolver",
           "source_for_snapshot", "workflow_file_for_run"]
