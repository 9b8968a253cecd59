"""Run the command line and kill it (SIGKILL, by itself) right after its N-th write to the store.

    python -m tests.reliability.killpoint N [--log FILE] -- --store S emit KEY --hand-off

A *write* is one call that changes the store: a ledger append, a checkpoint, a query-index row
(its mark or its clean row), an event-log row, a wake-up. With N larger than the number of
writes the command runs to its end (exit as usual); ``--log`` appends one line per write
(``<n> <what>``), so a battery learns how many steps a command has.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any, Callable


def _install(limit: int, log: str | None) -> None:
    from abstractruntime.storage.event_files import FileEventLog
    from abstractruntime.storage.json_files import JsonFileRunStore
    from abstractruntime.storage.ledger_files import JsonlLedgerStore
    from abstractruntime.storage.run_index import RunIndex

    count = [0]

    def wrap(owner: Any, name: str) -> None:
        original: Callable[..., Any] = getattr(owner, name, None)
        if original is None:
            return  # a release without this write

        @functools.wraps(original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            count[0] += 1
            if log:
                with open(log, "a") as out:
                    out.write(f"{count[0]} {owner.__name__}.{name}\n")
            if count[0] == limit:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(owner, name, counted)

    for owner, names in ((JsonlLedgerStore, ("append_lines", "put_secrets")),
                         (JsonFileRunStore, ("save_checkpoint",)),
                         (RunIndex, ("mark", "put", "mark_together", "put_together")),
                         (FileEventLog, ("create", "finish", "add_target"))):
        for name in names:
            wrap(owner, name)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return
    from abstractruntime.storage.postgres.events import PostgresEventLog
    from abstractruntime.storage.postgres.ledger import PostgresLedgerStore
    from abstractruntime.storage.postgres.runs import PostgresRunStore

    for owner, names in ((PostgresLedgerStore, ("append_lines",)), (PostgresRunStore, ("save_checkpoint", "wake")),
                         (PostgresEventLog, ("create", "finish", "add_target"))):
        for name in names:
            wrap(owner, name)


def main(argv: list[str]) -> int:
    """Parse ``N [--log FILE] -- CLI ARGS``, install the kill, run the command line."""
    split = argv.index("--")
    own, cli_args = argv[:split], argv[split + 1:]
    limit = int(own[0])
    log = own[own.index("--log") + 1] if "--log" in own else None
    _install(limit, log)
    from abstractruntime.cli.entry import run

    return run(cli_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
