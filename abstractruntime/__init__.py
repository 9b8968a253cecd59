"""abstractruntime: a durable execution kernel for Python workflows and agents.

A workflow is a graph of node handlers, or one plain function (``@workflow``); a run pauses
durably when it asks for something slow (a human answer, a timer, an event, a job, an LLM or
tool call) and resumes later in any process. Every step goes to a hash-chained ledger.

Names are loaded on first use, so ``import abstractruntime`` stays fast and imports only
the standard library.
"""

from __future__ import annotations

import importlib

# typing.TYPE_CHECKING without importing typing (type checkers read any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:  # what a type checker sees; at run time each name loads on first use (below)
    from typing import Any

    from .core.models import (
        Effect, EffectType, RecordKind, RunState, RunStatus, StepPlan, StepRecord, StepStatus, WaitReason, WaitState,
    )
    from .core.spec import WorkflowSource, WorkflowSpec
    from .flow import AsyncContext, Context, Workflow, step, workflow
    from .core.runtime import EffectOutcome, Runtime
    from .core.effect_context import EffectIdentity, current_effect
    from .core.clock import FixedClock
    from .core.redaction import Redactor
    from .core.policy import DefaultEffectPolicy, EffectPolicy, NoRetryPolicy, RetryPolicy, compute_idempotency_key
    from .storage.base import Checkpoint, LedgerHead, LedgerStore, QueryableRunStore, RunStore
    from .storage.in_memory import InMemoryLedgerStore, InMemoryRunStore
    from .storage.json_files import JsonFileRunStore, JsonlLedgerStore
    from .storage.ledger_chain import HashChainedLedgerStore, verify_ledger_chain
    from .storage.store import FileStore, open_store
    from .storage.verify import VerifyReport, verify_run, verify_store
    from .storage.bookmarks import Bookmark, BookmarkStore
    from .storage.signing import Ed25519Signer, generate_keypair
    from .loader import load_workflow_file
    from .storage.snapshots import InMemorySnapshotStore, JsonSnapshotStore, Snapshot, SnapshotStore
    from .core.restore import fork_snapshot, restore_snapshot, take_snapshot
    from .storage.artifacts import (
        Artifact, ArtifactMetadata, ArtifactStore, FileArtifactStore, InMemoryArtifactStore, artifact_ref,
        compute_artifact_id, get_artifact_id, is_artifact_ref, resolve_artifact,
    )
    from .identity.fingerprint import ActorFingerprint
    from .scheduler import ScheduledRuntime, Scheduler, SchedulerStats, WorkflowRegistry, create_scheduled_runtime
    from .core.errors import (
        AbstractRuntimeError, AlreadyAnsweredError, CorruptRecordError, EffectFailedError, InvalidInputError,
        LedgerConflictError, NondeterminismError, NotFoundError, RunExistsError, RunLockedError, RunNotFoundError,
        RunNotRetryableError, RunNotWaitingError, StepFailedError, TimerWaitError, VerificationFailedError,
        WaitKeyMismatchError, WorkflowDriftError, WorkflowNotRegisteredError,
    )
    from .core.waits import format_wait_handle, parse_wait_handle

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # core models and spec
    "Effect": "abstractruntime.core.models",
    "EffectType": "abstractruntime.core.models",
    "RunState": "abstractruntime.core.models",
    "RunStatus": "abstractruntime.core.models",
    "StepPlan": "abstractruntime.core.models",
    "StepRecord": "abstractruntime.core.models",
    "StepStatus": "abstractruntime.core.models",
    "RecordKind": "abstractruntime.core.models",
    "WaitReason": "abstractruntime.core.models",
    "WaitState": "abstractruntime.core.models",
    "WorkflowSpec": "abstractruntime.core.spec",
    "WorkflowSource": "abstractruntime.core.spec",
    # code-first workflows
    "workflow": "abstractruntime.flow",
    "step": "abstractruntime.flow",
    "Workflow": "abstractruntime.flow",
    "Context": "abstractruntime.flow",
    "AsyncContext": "abstractruntime.flow",
    # runtime
    "Runtime": "abstractruntime.core.runtime",
    "EffectOutcome": "abstractruntime.core.runtime",
    "current_effect": "abstractruntime.core.effect_context",
    "EffectIdentity": "abstractruntime.core.effect_context",
    "FixedClock": "abstractruntime.core.clock",
    "Redactor": "abstractruntime.core.redaction",
    # policies
    "EffectPolicy": "abstractruntime.core.policy",
    "DefaultEffectPolicy": "abstractruntime.core.policy",
    "RetryPolicy": "abstractruntime.core.policy",
    "NoRetryPolicy": "abstractruntime.core.policy",
    "compute_idempotency_key": "abstractruntime.core.policy",
    # stores
    "RunStore": "abstractruntime.storage.base",
    "LedgerStore": "abstractruntime.storage.base",
    "QueryableRunStore": "abstractruntime.storage.base",
    "Checkpoint": "abstractruntime.storage.base",
    "LedgerHead": "abstractruntime.storage.base",
    "InMemoryRunStore": "abstractruntime.storage.in_memory",
    "InMemoryLedgerStore": "abstractruntime.storage.in_memory",
    "JsonFileRunStore": "abstractruntime.storage.json_files",
    "JsonlLedgerStore": "abstractruntime.storage.json_files",
    "HashChainedLedgerStore": "abstractruntime.storage.ledger_chain",
    "verify_ledger_chain": "abstractruntime.storage.ledger_chain",
    "FileStore": "abstractruntime.storage.store",
    "verify_run": "abstractruntime.storage.verify",
    "verify_store": "abstractruntime.storage.verify",
    "VerifyReport": "abstractruntime.storage.verify",
    "Bookmark": "abstractruntime.storage.bookmarks",
    "BookmarkStore": "abstractruntime.storage.bookmarks",
    "Ed25519Signer": "abstractruntime.storage.signing",
    "generate_keypair": "abstractruntime.storage.signing",
    "load_workflow_file": "abstractruntime.loader",
    "open_store": "abstractruntime.storage.store",
    # snapshots
    "Snapshot": "abstractruntime.storage.snapshots",
    "SnapshotStore": "abstractruntime.storage.snapshots",
    "InMemorySnapshotStore": "abstractruntime.storage.snapshots",
    "JsonSnapshotStore": "abstractruntime.storage.snapshots",
    "take_snapshot": "abstractruntime.core.restore",
    "restore_snapshot": "abstractruntime.core.restore",
    "fork_snapshot": "abstractruntime.core.restore",
    # artifacts
    "Artifact": "abstractruntime.storage.artifacts",
    "ArtifactMetadata": "abstractruntime.storage.artifacts",
    "ArtifactStore": "abstractruntime.storage.artifacts",
    "InMemoryArtifactStore": "abstractruntime.storage.artifacts",
    "FileArtifactStore": "abstractruntime.storage.artifacts",
    "artifact_ref": "abstractruntime.storage.artifacts",
    "is_artifact_ref": "abstractruntime.storage.artifacts",
    "get_artifact_id": "abstractruntime.storage.artifacts",
    "resolve_artifact": "abstractruntime.storage.artifacts",
    "compute_artifact_id": "abstractruntime.storage.artifacts",
    # identity
    "ActorFingerprint": "abstractruntime.identity.fingerprint",
    # scheduler
    "Scheduler": "abstractruntime.scheduler",
    "SchedulerStats": "abstractruntime.scheduler",
    "WorkflowRegistry": "abstractruntime.scheduler",
    "ScheduledRuntime": "abstractruntime.scheduler",
    "create_scheduled_runtime": "abstractruntime.scheduler",
    # errors
    "AbstractRuntimeError": "abstractruntime.core.errors",
    "NotFoundError": "abstractruntime.core.errors",
    "RunNotFoundError": "abstractruntime.core.errors",
    "InvalidInputError": "abstractruntime.core.errors",
    "RunNotWaitingError": "abstractruntime.core.errors",
    "WaitKeyMismatchError": "abstractruntime.core.errors",
    "CorruptRecordError": "abstractruntime.core.errors",
    "VerificationFailedError": "abstractruntime.core.errors",
    "RunLockedError": "abstractruntime.core.errors",
    "WorkflowDriftError": "abstractruntime.core.errors",
    "EffectFailedError": "abstractruntime.core.errors",
    "WorkflowNotRegisteredError": "abstractruntime.core.errors",
    "AlreadyAnsweredError": "abstractruntime.core.errors",
    "TimerWaitError": "abstractruntime.core.errors",
    "RunExistsError": "abstractruntime.core.errors",
    "RunNotRetryableError": "abstractruntime.core.errors",
    "LedgerConflictError": "abstractruntime.core.errors",
    "NondeterminismError": "abstractruntime.core.errors",
    "StepFailedError": "abstractruntime.core.errors",
    # waits
    "format_wait_handle": "abstractruntime.core.waits",
    "parse_wait_handle": "abstractruntime.core.waits",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'abstractruntime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
