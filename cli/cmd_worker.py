"""The `worker` command: scheduler work passes in a loop, waiting for work in between."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, Optional

import typer

from .app import app, settings, shown_state
from .cmd_exec import scheduler_for
from .output import json_inline

if TYPE_CHECKING:
    from abstractruntime.core.errors import DatabaseUnavailableError
    from abstractruntime.scheduler.outage import Outage


@app.command("worker")
def worker_cmd(
    ctx: typer.Context,
    interval: float = typer.Option(1.0, "--interval", metavar="SECONDS", min=0.01,
                                   help="Longest idle wait between passes (a wake-up or a due timer ends it "
                                        "sooner on PostgreSQL)."),
    once: bool = typer.Option(False, "--once", help="Do one pass and exit."),
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many runs per pass."),
    allow_drift: bool = typer.Option(False, "--allow-drift", help="Accept changed workflow files."),
    concurrency: int = typer.Option(1, "--concurrency", metavar="N", min=1,
                                    help="Advance up to N runs at once on one event loop (async handlers overlap)."),
    lease: float = typer.Option(30.0, "--lease", metavar="SECONDS", min=0.1,
                                help="PostgreSQL: how long a claimed run stays this worker's without renewal "
                                     "(a worker killed with -9 has its runs taken over after this)."),
    max_outage: Optional[float] = typer.Option(
        None, "--max-outage", metavar="SECONDS", min=0.1,
        help="Exit (1) when the store stays unreachable this long (default: keep retrying)."),
    grace: float = typer.Option(30.0, "--grace", metavar="SECONDS", min=0.0,
                                help="On SIGTERM/SIGINT, how long synchronous handlers in hand may take to "
                                     "finish (their results are recorded); after it, exit 143 (130) at once, "
                                     "leaving those runs to expire."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per advanced run (JSON lines)."),
) -> None:
    """Advance runnable runs until stopped: due timers, and runs left `running` (handed off by
    `emit --hand-off`, started with `start`, cut short by --max-steps, or left by a worker that
    died). Each pass first starts the runs of due schedule ticks (`schedule add`), each tick's
    run once across every worker. SIGINT or SIGTERM stop it: nothing more is claimed, each run in hand stops at its
    next step, and the worker exits 0 once every result is recorded and every run released.

    Prints one line per advanced run: `run_id<TAB>status` (or a JSON object with --json).
    With --once the exit code is 0 when the pass ran (its lines name the runs it advanced and
    the status each reached, a failed run included; no line: nothing was runnable) and 1 when a
    runnable run could not be advanced (each named on stderr; the others were still advanced)
    or the store failed.
    Many workers may serve one store: each run has one writer at a time. On PostgreSQL, work
    is claimed with leases (FOR UPDATE SKIP LOCKED) and idle workers are woken at once by
    `emit --hand-off` (LISTEN/NOTIFY). With --concurrency N, up to N runs advance at the same
    time; a stop cancels their async handlers (each interrupted effect is recorded and runs again
    later) and lets their synchronous handlers finish (their results are recorded). A handler
    still running after --grace SECONDS (30) ends with the worker: exit 143 (130 on SIGINT)
    without releasing its run, which another worker takes once the lease expires (PostgreSQL) or
    at once (a folder: its lock ends with the process). A second signal does that at once.

    When the database goes away (a restart, a cut connection) the worker keeps going: it
    retries with capped exponential backoff and jitter, prints one line when the outage
    begins and one when it ends, and exits only on a configuration error (a bad connection
    string, a refused password, no store there) or once an outage outlasts --max-outage.
    """
    from abstractruntime.core.errors import DatabaseUnavailableError
    from abstractruntime.scheduler.outage import Outage

    s = settings(ctx, json_out)
    stop = threading.Event()
    scheduler: Any = None
    watchdog: list[threading.Timer] = []

    def abandon(signum: int, why: str) -> None:
        held = scheduler.in_hand() if scheduler is not None else []
        if held:
            shown = ", ".join(held[:10]) + (" ..." if len(held) > 10 else "")
            typer.echo(f"warning: {why}: {len(held)} run(s) still in a handler ({shown}); exiting without "
                       "releasing them (their leases expire, their locks end with this process)", err=True)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        # No clean-up may run now: it would release what a handler thread still writes for.
        os._exit(128 + signum)

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            abandon(signum, "a second signal")
            return
        stop.set()
        timer = threading.Timer(grace, abandon, args=(signum, f"--grace {grace:g} s passed"))
        timer.daemon = True
        watchdog.append(timer)
        timer.start()

    def report(state: Any) -> None:
        typer.echo(json_inline(shown_state(s, state).to_dict()) if s.json else f"{state.run_id}\t{state.status.value}")

    def outage_began(exc: BaseException) -> None:
        limit_note = f" for up to {max_outage:g} s (--max-outage)" if max_outage else ""
        reason = " ".join(str(exc).split())  # libpq's messages span lines
        typer.echo(f"warning: database unavailable: {reason}; retrying with backoff{limit_note}", err=True)

    def outage_ended(seconds: float) -> None:
        typer.echo(f"database available again after {seconds:.1f} s", err=True)

    errors: list[str] = []
    failed: list[str] = []

    def after_pass(advanced: list[Any]) -> None:
        for line in errors:
            typer.echo(f"error: {line}", err=True)
        failed.extend(errors)
        errors.clear()

    outage = Outage(max_outage=max_outage, on_start=outage_began, on_end=outage_ended)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while scheduler is None and not stop.is_set():
            try:  # a database that is not up yet is waited for like any outage
                scheduler = scheduler_for(s, limit=limit, allow_drift=allow_drift, errors=errors,
                                          on_run_resumed=report, lease_s=lease, schedules=True)
            except DatabaseUnavailableError as exc:
                stop.wait(_limited(outage, exc, max_outage))
        if scheduler is None:
            return
        outage.ended()
        s.info(f"worker started on {s.store_root()} as {scheduler.worker_id} (Ctrl-C to stop)")
        try:
            scheduler.serve(limit=limit, concurrency=concurrency, interval=interval, once=once, stop_event=stop,
                            outage=outage, on_pass=after_pass)
        except DatabaseUnavailableError as exc:
            raise _gave_up(exc, max_outage) from None
    finally:
        if scheduler is not None:
            scheduler.close_claims()
        for timer in watchdog:
            timer.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    s.info("worker stopped")
    if once and failed:
        raise typer.Exit(1)  # the pass could not advance every runnable run (each named above)


def _limited(outage: "Outage", exc: "DatabaseUnavailableError", max_outage: Optional[float]) -> float:
    """The wait before the next attempt, or the outage that outlasted --max-outage."""
    from abstractruntime.core.errors import DatabaseUnavailableError

    try:
        return outage.failed(exc)
    except DatabaseUnavailableError as final:
        raise _gave_up(final, max_outage) from None


def _gave_up(exc: "DatabaseUnavailableError", max_outage: Optional[float]) -> "DatabaseUnavailableError":
    """The outage that outlasted --max-outage, said in the command's terms."""
    if max_outage is None or "allowed" not in str(exc):
        return exc
    return type(exc)(f"{exc} (--max-outage {max_outage:g})", **exc.details)
