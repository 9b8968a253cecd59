"""``ctx``: what a code-first workflow's function calls to do anything durable.

Every call takes the run's next *position*. On the first execution it does the work and
records it; when the function runs again from the top (on resume, after a crash, in a
``replay`` check) the call returns what its position recorded instead — a step is never run
again once its result is recorded. What a call returns is always the value as recorded (its
JSON round trip), on the first execution too, so both see the same value.

:class:`Context` serves a plain ``def`` workflow; :class:`AsyncContext` an ``async def`` one,
whose methods are all awaited (steps started concurrently take positions in the order they
start). See docs/workflows.md for the determinism rules.
"""

from __future__ import annotations

import uuid as uuid_module
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

if TYPE_CHECKING:
    from .engine import FlowRun

Choices = Optional[list[str]]
When = Union[datetime, str]


class _Base:
    """What both contexts share: the run they belong to."""

    def __init__(self, flow_run: "FlowRun") -> None:
        self._run = flow_run

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._run.run_id

    @property
    def workflow_id(self) -> str:
        """The workflow's id."""
        return self._run.flow.workflow_id

    @property
    def is_replaying(self) -> bool:
        """True while the next call returns a recorded value (the function is catching up with
        its history): e.g. to log only once, ``if not ctx.is_replaying: print(...)``."""
        return self._run.is_replaying

    @property
    def position(self) -> int:
        """The position the next recorded call takes (1 for the first)."""
        return self._run.next_position


class Context(_Base):
    """The ``ctx`` of a plain ``def`` workflow (see the module docstring)."""

    def step(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` once and record its result; later executions get the result.

        A step that raises is attempted again as its ``@step(attempts=...)`` or the effect policy
        says; its final failure is recorded and raised (:class:`StepFailedError`) here, on this
        execution and on every replay. Inside ``fn``, ``abstractruntime.current_effect()`` gives the
        step's idempotency key (stable across its attempts).
        """
        run = self._run
        if callable(fn):
            name, _, convert = run.step_identity(fn)
            entry = run.replayed("step", name)
            if entry is not None:  # the common case of a replay: the recorded value, at once
                return run.step_value(entry, convert)
        return run.run_op(run.step_op(fn, args, kwargs))

    def ask(self, prompt: str, choices: Choices = None, *, free_text: Optional[bool] = None,
            details: Optional[dict[str, Any]] = None) -> Any:
        """Ask a person; the run waits (exit 5, a wait handle) until ``resume RUN@wN --answer TEXT``.

        Returns the answer's text (``{"answer": text}``), or the whole payload of a structured
        answer. With ``choices`` only those answers are accepted unless ``free_text=True``.
        """
        return self._run.run_op(self._run.ask_op(prompt, choices, free_text, details))

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a durable timer: a worker or ``tick --due`` resumes the run)."""
        self._run.run_op(self._run.sleep_op(seconds=seconds))

    def sleep_until(self, when: When) -> None:
        """Wait until ``when`` (an aware datetime, or ISO-8601 text)."""
        self._run.run_op(self._run.sleep_op(until=when))

    def wait_event(self, key: str) -> Any:
        """Wait for the event ``key`` (``abstractruntime emit KEY --payload JSON``); returns its payload."""
        return self._run.run_op(self._run.wait_event_op(key))

    def wait_job(self, job_id: str) -> Any:
        """Wait for job ``job_id`` (resumed on key ``job:<job_id>``); returns the payload it was resumed with."""
        return self._run.run_op(self._run.wait_job_op(job_id))

    def llm(self, prompt: Optional[str] = None, *, messages: Optional[list[dict[str, Any]]] = None,
            system_prompt: Optional[str] = None, tools: Optional[list[dict[str, Any]]] = None,
            **params: Any) -> dict[str, Any]:
        """An ``llm_call`` effect (the same handlers, modes and retries as a graph's); returns its
        result ``{content, tool_calls, usage, model, finish_reason}``. ``params`` (``model``,
        ``temperature``, ...) go to the model."""
        return self._run.run_op(self._run.llm_op(prompt, messages, system_prompt, tools, params))  # type: ignore[no-any-return]

    def tools(self, calls: list[dict[str, Any]]) -> dict[str, Any]:
        """A ``tool_calls`` effect; returns ``{"mode": "executed", "results": [...]}`` — also when
        the calls waited for an operator's approval (``tools approve RUN``)."""
        return self._run.run_op(self._run.tools_op(calls))  # type: ignore[no-any-return]

    def child(self, workflow: Any, **inputs: Any) -> Any:
        """Run ``workflow`` (a workflow, or a registered workflow id) as a subworkflow with
        ``inputs``; returns its output (the run waits while the child waits)."""
        return self._run.run_op(self._run.child_op(workflow, inputs))

    def now(self) -> datetime:
        """The current time (aware UTC), recorded: a replay gets the same instant."""
        return self._run.run_op(self._run.value_op("now"))  # type: ignore[no-any-return]

    def uuid(self) -> uuid_module.UUID:
        """A random UUID, recorded."""
        return self._run.run_op(self._run.value_op("uuid"))  # type: ignore[no-any-return]

    def random(self) -> float:
        """A random float in [0, 1), recorded."""
        return self._run.run_op(self._run.value_op("random"))  # type: ignore[no-any-return]

    def patched(self, name: str) -> bool:
        """True for runs that reach this call with this code, False for runs recorded before it
        was added (a marker in the ledger says which): one file serves old and new runs.

        Write ``if ctx.patched("name"): <new code> else: <old code>``; once no run recorded
        before the change is left, keep only the new code (the marker is then passed over).
        """
        return self._run.run_op(self._run.patched_op(name))  # type: ignore[no-any-return]


class AsyncContext(_Base):
    """The ``ctx`` of an ``async def`` workflow: every method is awaited (see :class:`Context`).

    Steps started concurrently (``asyncio.gather(ctx.step(a), ctx.step(b))``) take positions in
    the order they start and run at the same time; waits, LLM and tool calls and children are
    performed one at a time, in the order they were started.
    """

    async def step(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """See :meth:`Context.step`; an ``async def`` ``fn`` is awaited, a plain one runs in a thread."""
        run = self._run
        if callable(fn):
            name, _, convert = run.step_identity(fn)
            entry = run.replayed("step", name)
            if entry is not None:
                return run.step_value(entry, convert)
        return await run.arun_op(run.step_op(fn, args, kwargs))

    async def ask(self, prompt: str, choices: Choices = None, *, free_text: Optional[bool] = None,
                  details: Optional[dict[str, Any]] = None) -> Any:
        """See :meth:`Context.ask`."""
        return await self._run.arun_op(self._run.ask_op(prompt, choices, free_text, details))

    async def sleep(self, seconds: float) -> None:
        """See :meth:`Context.sleep`."""
        await self._run.arun_op(self._run.sleep_op(seconds=seconds))

    async def sleep_until(self, when: When) -> None:
        """See :meth:`Context.sleep_until`."""
        await self._run.arun_op(self._run.sleep_op(until=when))

    async def wait_event(self, key: str) -> Any:
        """See :meth:`Context.wait_event`."""
        return await self._run.arun_op(self._run.wait_event_op(key))

    async def wait_job(self, job_id: str) -> Any:
        """See :meth:`Context.wait_job`."""
        return await self._run.arun_op(self._run.wait_job_op(job_id))

    async def llm(self, prompt: Optional[str] = None, *, messages: Optional[list[dict[str, Any]]] = None,
                  system_prompt: Optional[str] = None, tools: Optional[list[dict[str, Any]]] = None,
                  **params: Any) -> dict[str, Any]:
        """See :meth:`Context.llm`."""
        return await self._run.arun_op(self._run.llm_op(prompt, messages, system_prompt, tools, params))  # type: ignore[no-any-return]

    async def tools(self, calls: list[dict[str, Any]]) -> dict[str, Any]:
        """See :meth:`Context.tools`."""
        return await self._run.arun_op(self._run.tools_op(calls))  # type: ignore[no-any-return]

    async def child(self, workflow: Any, **inputs: Any) -> Any:
        """See :meth:`Context.child`."""
        return await self._run.arun_op(self._run.child_op(workflow, inputs))

    async def now(self) -> datetime:
        """See :meth:`Context.now`."""
        return await self._run.arun_op(self._run.value_op("now"))  # type: ignore[no-any-return]

    async def uuid(self) -> uuid_module.UUID:
        """See :meth:`Context.uuid`."""
        return await self._run.arun_op(self._run.value_op("uuid"))  # type: ignore[no-any-return]

    async def random(self) -> float:
        """See :meth:`Context.random`."""
        return await self._run.arun_op(self._run.value_op("random"))  # type: ignore[no-any-return]

    async def patched(self, name: str) -> bool:
        """See :meth:`Context.patched`."""
        return await self._run.arun_op(self._run.patched_op(name))  # type: ignore[no-any-return]


__all__ = ["AsyncContext", "Context"]
