"""The `worker` command: scheduler work passes in a loop, waiting for work in between."""

from __future__ import annotations

import signal
import threading
from typing import Any

import typer

from .app import app, settings
from .cmd_exec import scheduler_for
from .output import json_inline


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
    json_out: bool = typer.Option(False, "--json", help="One JSON object per advanced run (JSON lines)."),
) -> None:
    """Advance runnable runs until stopped: due timers, and runs left `running` (handed off by
    `emit --hand-off`, started with `start`, cut short by --max-steps, or left by a worker that
    died). SIGINT or SIGTERM end it cleanly (exit 0).

    Prints one line per advanced run: `run_id<TAB>status` (or a JSON object with --json).
    Many workers may serve one store: each run has one writer at a time. On PostgreSQL, work
    is claimed with leases (FOR UPDATE SKIP LOCKED) and idle workers are woken at once by
    `emit --hand-off` (LISTEN/NOTIFY). With --concurrency N, up to N runs advance at the same
    time; a stop cancels the in-flight ones: each interrupted effect is recorded and runs again later.
    """
    s = settings(ctx, json_out)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    def report(state: Any) -> None:
        typer.echo(json_inline(state.to_dict()) if s.json else f"{state.run_id}\t{state.status.value}")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    errors: list[str] = []
    scheduler = scheduler_for(s, limit=limit, allow_drift=allow_drift, errors=errors, on_run_resumed=report,
                              lease_s=lease)
    s.info(f"worker started on {s.store_root()} as {scheduler.worker_id} (Ctrl-C to stop)")
    try:
        scheduler.listen_for_work()
        while not stop.is_set():
            advanced = scheduler.work_pass(limit=limit, concurrency=concurrency, stop_event=stop)
            for line in errors:
                typer.echo(f"error: {line}", err=True)
            errors.clear()
            if once:
                break
            if not advanced:
                scheduler.wait_for_work(interval, stop)
    finally:
        scheduler.close_claims()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    s.info("worker stopped")
