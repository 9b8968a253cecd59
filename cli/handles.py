"""Wait handles on the command line: ``RUN@wN`` names one wait of one run.

``run``, ``tick`` and ``resume`` print the handle of the wait a run stopped on; ``resume``
takes it, so an answer reaches the wait it was meant for. A handle whose wait was already
answered is refused (exit 1, nothing written), so a retried CI step cannot answer the
run's next question. A bare run id answers whatever the run waits on now: allowed on a
terminal, where the person sees the prompt, or with ``--current``; refused in a script
(exit 2) naming the handle to use. Runs recorded before waits had ids have no handle and
are answered by run id.
"""

from __future__ import annotations

from typing import Any, Optional


def split_handle(text: str) -> tuple[str, Optional[str]]:
    """``"RUN@w3"`` -> ``("RUN", "w3")``; a bare run id -> ``(run_id, None)`` (the kernel's
    :func:`~abstractruntime.core.waits.parse_wait_handle`: the run id is checked like every id)."""
    from abstractruntime.core.waits import parse_wait_handle

    return parse_wait_handle(text)


def run_id_of(text: str) -> str:
    """The run a run id or a wait handle names (for commands that act on the whole run)."""
    return split_handle(text)[0]


def current_wait_id(state: Any) -> Optional[str]:
    """The id of the wait the run is on now (``None`` when not waiting, or for older runs)."""
    wait = state.waiting
    return getattr(wait, "wait_id", None) if wait is not None and state.status.value == "waiting" else None


def check_target(state: Any, given: str, wait_id: Optional[str], *, current: bool, interactive: bool,
                 runtime: Any = None) -> None:
    """Refuse an answer that may not reach the wait its sender saw (before anything is written).

    A handle is judged by the kernel (:meth:`Runtime.check_wait`): "already answered" only when
    that wait's answer is recorded; a run whose wait a torn tail took away is not waiting on it.
    """
    from abstractruntime.core.errors import InvalidInputError

    from .app import wait_handle

    now = current_wait_id(state)
    if wait_id is not None:
        if now != wait_id:
            if runtime is None:
                from abstractruntime.core.errors import AlreadyAnsweredError

                raise AlreadyAnsweredError(f"wait {given} was already answered (run {state.run_id} is "
                                           f"{state.status.value}); nothing was written", run_id=state.run_id,
                                           wait_id=wait_id, current_wait_id=now)
            runtime.check_wait(state.run_id, wait_id)
        return
    if now is not None and not current and not interactive:
        handle = wait_handle(state)
        raise InvalidInputError(f"{given} is a run, not a wait: in a script answer the wait you were shown, "
                                f"e.g. abstractruntime resume {handle} ... (or add --current to answer "
                                "whatever the run waits on now)", run_id=state.run_id, wait_handle=handle)


__all__ = ["split_handle", "run_id_of", "current_wait_id", "check_target"]
