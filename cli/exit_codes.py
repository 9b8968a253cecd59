"""Exit codes of the ``abstractruntime`` command, and the one table mapping error codes to them.

=====  =========================================================================
code   meaning
=====  =========================================================================
0      ok; the run completed (or the command did what it was asked)
1      error, or the run failed / was cancelled
2      usage error or bad input (unsafe id, malformed JSON, answer not a choice)
3      verification failed
4      not found (store, run, snapshot, bookmark, no run waiting on an event, no runs to verify)
5      the run is waiting (for an answer, an event, a timer or a job)
6      the run is blocked: its workflow code diverges from its recorded history (``replay``: a run diverges)
130    interrupted (Ctrl-C)
143    terminated (SIGTERM)
=====  =========================================================================
"""

from __future__ import annotations

OK = 0
ERROR = 1
USAGE = 2
VERIFY_FAILED = 3
NOT_FOUND = 4
WAITING = 5
BLOCKED = 6
INTERRUPTED = 130
TERMINATED = 143

# Error ``code`` (abstractruntime.core.errors) -> exit code. A subclass without a row of
# its own uses its nearest base class's row (see exit_code_for), so new error classes
# land somewhere sensible without touching this table.
ERROR_EXIT_CODES: dict[str, int] = {
    "error": ERROR,
    "not_found": NOT_FOUND,
    "store_not_found": NOT_FOUND,
    "run_not_found": NOT_FOUND,
    "snapshot_not_found": NOT_FOUND,
    "bookmark_not_found": NOT_FOUND,
    "workflow_not_registered": NOT_FOUND,
    "schedule_not_found": NOT_FOUND,
    "invalid_input": USAGE,
    "invalid_id": USAGE,
    "payload_too_large": USAGE,
    "invalid_answer": USAGE,
    "wait_key_mismatch": USAGE,
    "server_not_configured": USAGE,
    "timer_wait": USAGE,
    "run_state": ERROR,
    "run_not_waiting": ERROR,
    "run_terminal": ERROR,
    "run_exists": ERROR,
    "schedule_exists": ERROR,
    "run_pruned": ERROR,
    "already_answered": ERROR,
    "not_retryable": ERROR,
    "corrupt_record": ERROR,
    "unsupported_format": ERROR,
    "verification_failed": VERIFY_FAILED,
    "secret_missing": VERIFY_FAILED,
    "run_locked": ERROR,
    "ledger_conflict": ERROR,
    "session_closed": ERROR,
    "async_required": ERROR,
    "workflow_drift": ERROR,
    "workflow_load": ERROR,
    "nondeterminism": BLOCKED,
    "step_failed": ERROR,
    "effect_failed": ERROR,
    "storage_error": ERROR,
    "database_unavailable": ERROR,
    "missing_extra": ERROR,
}

# Exit code for each run status a command ends on.
STATUS_EXIT_CODES: dict[str, int] = {
    "completed": OK,
    "running": OK,
    "waiting": WAITING,
    "failed": ERROR,
    "cancelled": ERROR,
}


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an exception: its class's ``code`` row, else its nearest base's."""
    for cls in type(exc).__mro__:
        code = cls.__dict__.get("code")
        if isinstance(code, str) and code in ERROR_EXIT_CODES:
            return ERROR_EXIT_CODES[code]
    return ERROR


def exit_code_for_status(status: str) -> int:
    """The exit code for a run that ends a command in ``status``."""
    return STATUS_EXIT_CODES.get(status, ERROR)


__all__ = ["OK", "ERROR", "USAGE", "VERIFY_FAILED", "NOT_FOUND", "WAITING", "BLOCKED", "INTERRUPTED", "TERMINATED",
           "ERROR_EXIT_CODES", "STATUS_EXIT_CODES", "exit_code_for", "exit_code_for_status"]
