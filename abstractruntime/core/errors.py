"""The one exception tree of abstractruntime.

Every error the library raises on purpose derives from :class:`AbstractRuntimeError`
and carries a stable, documented ``code``. The CLI maps codes to exit codes in one
table (``abstractruntime.cli.exit_codes``); callers match on ``code`` or on the class.

Where upstream AbstractRuntime 0.0.1 raised a builtin (``KeyError`` for an unknown run,
``ValueError`` for a bad resume), the matching class here also derives from that builtin,
so ``except KeyError`` / ``except ValueError`` written for upstream keeps working.

Hierarchy::

    AbstractRuntimeError                      code
    ├── NotFoundError                         not_found
    │   ├── RunNotFoundError (KeyError)       run_not_found
    │   ├── SnapshotNotFoundError (KeyError)  snapshot_not_found
    │   ├── BookmarkNotFoundError (KeyError)  bookmark_not_found
    │   ├── WorkflowNotRegisteredError (KeyError) workflow_not_registered
    │   ├── ScheduleNotFoundError (KeyError)  schedule_not_found
    │   └── StoreNotFoundError                store_not_found
    ├── InvalidInputError (ValueError)        invalid_input
    │   ├── InvalidIdError                    invalid_id
    │   ├── PayloadTooLargeError              payload_too_large
    │   ├── InvalidAnswerError                invalid_answer
    │   ├── WaitKeyMismatchError              wait_key_mismatch
    │   ├── TimerWaitError                    timer_wait
    │   ├── RunExistsError                    run_exists
    │   │   └── RunPrunedError                run_pruned
    │   ├── ScheduleExistsError               schedule_exists
    │   ├── RunNotRetryableError              not_retryable
    │   └── ServerNotConfiguredError          server_not_configured
    ├── RunStateError (ValueError)            run_state
    │   ├── RunNotWaitingError                run_not_waiting
    │   │   └── AlreadyAnsweredError          already_answered
    │   └── RunTerminalError                  run_terminal
    ├── CorruptRecordError                    corrupt_record   (file + line)
    │   └── MisplacedRecordError              corrupt_record   (content names another place)
    ├── UnsupportedFormatError                unsupported_format
    ├── VerificationFailedError               verification_failed
    │   └── SecretMissingError                secret_missing
    ├── RunLockedError                        run_locked
    ├── LedgerConflictError                   ledger_conflict
    ├── SessionClosedError                    session_closed
    ├── AsyncRequiredError                    async_required
    ├── WorkflowDriftError                    workflow_drift
    ├── WorkflowLoadError                     workflow_load
    ├── NondeterminismError                   nondeterminism
    ├── EffectFailedError                     effect_failed
    │   └── StepFailedError                   step_failed
    ├── StorageError                          storage_error    (OS-level causes)
    │   └── DatabaseUnavailableError          database_unavailable
    └── MissingExtraError (ImportError)       missing_extra
"""

from __future__ import annotations

# typing.TYPE_CHECKING without importing typing (type checkers read any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class AbstractRuntimeError(Exception):
    """Base of every error abstractruntime raises deliberately.

    ``code`` is stable across releases; ``message`` is one readable line.
    """

    code: str = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:  # first in the MRO of the KeyError subclasses too, which would quote it
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form used by the CLI's ``--json`` error output."""
        return {"code": self.code, "message": self.message, **self.details}


class NotFoundError(AbstractRuntimeError):
    """Something named by id does not exist."""

    code = "not_found"


class StoreNotFoundError(NotFoundError):
    """No store where one was looked for (``searched`` lists the paths, in order)."""

    code = "store_not_found"


class RunNotFoundError(NotFoundError, KeyError):
    """No run with this id in the store (a ``KeyError`` too, as upstream)."""

    code = "run_not_found"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"Unknown run_id: {run_id}", run_id=run_id)


class SnapshotNotFoundError(NotFoundError, KeyError):
    """No snapshot with this id."""

    code = "snapshot_not_found"

    def __init__(self, snapshot_id: str) -> None:
        super().__init__(f"Unknown snapshot: {snapshot_id}", snapshot_id=snapshot_id)


class BookmarkNotFoundError(NotFoundError, KeyError):
    """No bookmark with this name on the run."""

    code = "bookmark_not_found"

    def __init__(self, run_id: str, name: str) -> None:
        super().__init__(f"Run {run_id} has no bookmark named {name!r}", run_id=run_id, name=name)


class WorkflowNotRegisteredError(NotFoundError, KeyError):
    """No workflow with this id is registered: in a ``WorkflowRegistry`` (a ``KeyError`` too, as
    in upstream 0.0.1), or no file of the operator's workflow registry declares it
    (``abstractruntime.registry``; ``message`` then says how to register one)."""

    code = "workflow_not_registered"

    def __init__(self, workflow_id: str, message: str | None = None) -> None:
        super().__init__(
            message or f"Workflow '{workflow_id}' is not registered; "
            "register it with registry.register(workflow) first",
            workflow_id=workflow_id,
        )
        self.workflow_id = workflow_id


class ScheduleNotFoundError(NotFoundError, KeyError):
    """No schedule of that name in the store (never added, or removed)."""

    code = "schedule_not_found"


class InvalidInputError(AbstractRuntimeError, ValueError):
    """Input rejected before anything was written."""

    code = "invalid_input"


class InvalidIdError(InvalidInputError):
    """An id (run, snapshot, artifact, bookmark) with unsafe characters."""

    code = "invalid_id"


class PayloadTooLargeError(InvalidInputError):
    """A record or payload over the documented size limit."""

    code = "payload_too_large"


class InvalidAnswerError(InvalidInputError):
    """An answer outside the offered choices when free text is not allowed."""

    code = "invalid_answer"


class WaitKeyMismatchError(InvalidInputError):
    """``resume`` was given a wait_key other than the one the run waits on."""

    code = "wait_key_mismatch"


class TimerWaitError(InvalidInputError):
    """An answer (or an event) sent to a run waiting on a ``wait_until`` timer.

    A timer is resumed by the clock, or explicitly by an operator (``resume(...,
    fire_timer=True)``, CLI ``resume RUN@wN --fire-timer``), which the ledger records as such.
    Nothing is written.
    """

    code = "timer_wait"


class RunExistsError(InvalidInputError):
    """``start`` with the id of a run that already exists (creating a run is exclusive)."""

    code = "run_exists"


class ScheduleExistsError(InvalidInputError):
    """Adding a schedule under a name a schedule of the store already has (remove it first)."""

    code = "schedule_exists"


class RunPrunedError(RunExistsError):
    """``start`` with the id of a run that was pruned: its tombstone keeps the id, which can never
    name another run (a verifier would otherwise see two runs under one id)."""

    code = "run_pruned"


class RunNotRetryableError(InvalidInputError):
    """``retry`` on a run that did not fail on a retryable effect error."""

    code = "not_retryable"


class ServerNotConfiguredError(InvalidInputError):
    """An API key would go to a server the operator did not configure for it (one a run
    recorded, i.e. named by data); nothing was sent."""

    code = "server_not_configured"


class RunStateError(AbstractRuntimeError, ValueError):
    """The run is not in a state that allows the operation."""

    code = "run_state"


class RunNotWaitingError(RunStateError):
    """``resume`` on a run that is not waiting (also a repeated resume of one wait)."""

    code = "run_not_waiting"


class AlreadyAnsweredError(RunNotWaitingError):
    """``resume`` named a wait (``RUN@wN``) that an earlier resume already answered.

    Nothing is written: a retried answer is never applied to the run's next wait.
    """

    code = "already_answered"


class RunTerminalError(RunStateError):
    """The run already completed, failed or was cancelled."""

    code = "run_terminal"


class CorruptRecordError(AbstractRuntimeError):
    """A stored file does not parse or does not verify; names file and line."""

    code = "corrupt_record"

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}", path=path, line=line)
        self.path = path
        self.line = line


class MisplacedRecordError(CorruptRecordError):
    """A file whose content names another place (a checkpoint of run B in run A's directory)."""

    code = "corrupt_record"


class UnsupportedFormatError(AbstractRuntimeError):
    """A file written by a newer abstractruntime (its ``format`` is unknown here)."""

    code = "unsupported_format"


class VerificationFailedError(AbstractRuntimeError):
    """A ledger, checkpoint, bookmark or signature check failed."""

    code = "verification_failed"


class SecretMissingError(VerificationFailedError):
    """A redacted secret the run needs has no value in the run's secrets store: the run is not
    continued with a placeholder. Nothing was written."""

    code = "secret_missing"


class RunLockedError(AbstractRuntimeError):
    """Another process (or thread) holds the run's lock."""

    code = "run_locked"

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"Run {run_id} is locked by another writer; try again or wait for it",
            run_id=run_id,
        )


class LedgerConflictError(AbstractRuntimeError):
    """An append found the ledger's head elsewhere than the writer read it: another writer
    moved it (a lost lock or lease). Nothing was written."""

    code = "ledger_conflict"


class SessionClosedError(AbstractRuntimeError):
    """A writer tried to write after its session was closed (cancelled, or its lock given up).
    Nothing was written."""

    code = "session_closed"


class AsyncRequiredError(AbstractRuntimeError):
    """An ``async def`` node or handler met the sync API inside a running event loop: use the
    ``a*`` methods (``await runtime.atick(...)``). Nothing was written."""

    code = "async_required"


class WorkflowDriftError(AbstractRuntimeError):
    """The workflow source changed since the run (or snapshot) recorded it."""

    code = "workflow_drift"


class WorkflowLoadError(AbstractRuntimeError):
    """A workflow file could not be imported or exposes no workflow."""

    code = "workflow_load"


class NondeterminismError(AbstractRuntimeError):
    """A code-first workflow's code asked, at a position of its run, for something else than the
    run recorded there (``details``: ``position``, ``recorded``, ``code``). Nothing was written;
    the run is blocked until code that replays its history is deployed, or it is forked or
    cancelled (docs/workflows.md)."""

    code = "nondeterminism"


class EffectFailedError(AbstractRuntimeError):
    """An effect handler failed after all its attempts."""

    code = "effect_failed"


class StepFailedError(EffectFailedError):
    """A code-first workflow's step failed after all its attempts: raised where ``ctx.step`` was
    called, on the first execution and on every replay (``details``: ``position``, ``step``,
    ``exception_type``, ``error``)."""

    code = "step_failed"


class StorageError(AbstractRuntimeError):
    """The file system refused a read or write (permissions, full disk, symlink)."""

    code = "storage_error"


class DatabaseUnavailableError(StorageError):
    """The database could not be reached, or dropped the connection (a restart, a network cut,
    a server-side timeout): worth retrying, unlike a configuration error."""

    code = "database_unavailable"


class MissingExtraError(AbstractRuntimeError, ImportError):
    """An optional dependency is not installed; the message says which extra to add."""

    code = "missing_extra"

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package: install the '{extra}' extra "
            f"(from the repository: pip install -e '.[{extra}]')",
            package=package,
            extra=extra,
        )


__all__ = [
    "AbstractRuntimeError",
    "NotFoundError",
    "RunNotFoundError",
    "SnapshotNotFoundError",
    "BookmarkNotFoundError",
    "WorkflowNotRegisteredError",
    "ScheduleNotFoundError",
    "ScheduleExistsError",
    "InvalidInputError",
    "InvalidIdError",
    "PayloadTooLargeError",
    "InvalidAnswerError",
    "WaitKeyMismatchError",
    "TimerWaitError",
    "RunExistsError",
    "RunPrunedError",
    "RunStateError",
    "RunNotWaitingError",
    "RunTerminalError",
    "CorruptRecordError",
    "UnsupportedFormatError",
    "VerificationFailedError",
    "RunLockedError",
    "WorkflowDriftError",
    "WorkflowLoadError",
    "NondeterminismError",
    "EffectFailedError",
    "StepFailedError",
    "StorageError",
    "DatabaseUnavailableError",
    "MissingExtraError",
]
