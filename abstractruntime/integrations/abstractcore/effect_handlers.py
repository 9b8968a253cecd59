"""The ``llm_call`` and ``tool_calls`` effect handlers.

``llm_call`` payload: ``{prompt?, messages?, system_prompt?, tools?, params?}`` (at least a
prompt or messages). Its result is the LLM client's dict, stored at ``result_key``.

``tool_calls`` payload: ``{tool_calls: [...], wait_key?, resume_to_node?}``. When the executor
ran the calls, its ``{"mode": "executed", "results": [...]}`` is stored at ``result_key``.
When it passed them through, the run WAITs (reason ``event``) on a stable key
``tools:<run_id>:<first 16 hex of calls_sha256>`` with ``details = {"mode", "tool_calls",
"calls_sha256"}``; a host resumes it with the results (see ``approval``).

Failures are :class:`EffectOutcome` failures, never exceptions: a retryable one (timeout,
refused connection, HTTP 5xx/429) lets the runtime's effect policy try again; a
non-retryable one (``retryable=False``: HTTP 4xx, malformed response, a bad payload) ends
the effect at once. Every failure string has credentials scrubbed before it is recorded.

What each ``llm_call`` spent goes on its outcome record as ``ext.usage`` (provider, model,
input/output tokens from the response's ``usage``, latency, and cost when a price table is
given); the kernel totals it and enforces the run's budget (:mod:`abstractruntime.core.budget`).
With ``rate_limits="wait"`` a 429/503 that says when to come back (``Retry-After``) becomes a
durable timer wait (``EffectOutcome.delayed``), not a failed attempt; ``"fail"`` (the default
of :func:`build_effect_handlers`, as in 0.0.1) keeps it a failed attempt. The call holds one of
its key's in-flight slots (``llm:<provider>``) while it runs, when the runtime has limits
(``runtime.in_flight``). A client that can stream (``streams`` true) streams when someone
observes the run: its text goes to ``current_effect().progress`` (never the ledger).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Awaitable, Callable, Optional, Union

from ...core.effect_context import EffectIdentity, current_effect
from ...core.runtime import EffectOutcome
from ...core.errors import AbstractRuntimeError, EffectFailedError, InvalidInputError
from ...core.models import Effect, EffectType, RunState, WaitReason, WaitState
from ._support import canonical_sha256, jsonable, normalize_tool_calls, scrub
from .llm_client import AbstractCoreLLMClient
from .logging import get_logger
from .streaming import TextPublisher
from .tool_executor import ToolExecutor
from .usage import PriceTable, usage_record

logger = get_logger(__name__)

# A handler returns an outcome, or (``async def``) an awaitable of one.
EffectHandler = Callable[[RunState, Effect, Optional[str]], Union[EffectOutcome, Awaitable[EffectOutcome]]]


def tool_calls_wait_key(run_id: str, calls_sha256: str) -> str:
    """The wait key of a pass-through ``tool_calls`` wait: same run and same calls → same key."""
    return f"tools:{run_id}:{calls_sha256[:16]}"


def _failure(exc: BaseException, what: str) -> EffectOutcome:
    # The runtime prefixes "Effect <type> failed after N attempts: ", so the text is the cause only.
    if isinstance(exc, EffectFailedError):
        return EffectOutcome.failed(scrub(exc.message), retryable=bool(exc.details.get("retryable", True)))
    if isinstance(exc, AbstractRuntimeError):  # bad payload, MissingExtraError: another attempt cannot help
        return EffectOutcome.failed(scrub(f"{what}: {exc}"), retryable=False)
    return EffectOutcome.failed(scrub(f"{what}: {type(exc).__name__}: {exc}"), retryable=True)


RATE_LIMIT_MODES = ("fail", "wait")


class _Meter:
    """What one handler knows to report a call's usage: its client, price table and slot key."""

    def __init__(self, llm: Any, prices: Optional[PriceTable], slot_key: Optional[str]) -> None:
        self.llm = llm
        self.prices = prices
        self.price_record = prices.to_record() if prices is not None else None  # recorded as ext.prices
        self.provider = getattr(llm, "usage_provider", None) or getattr(llm, "provider", None)
        self.slot_key = slot_key or f"llm:{self.provider or 'default'}"

    def ext(self, result: dict[str, Any], request: dict[str, Any], seconds: float) -> dict[str, Any]:
        params = request.get("params") or {}
        model = params.get("model") if isinstance(params, dict) and params.get("model") else None
        model = model or getattr(self.llm, "usage_model", None) or getattr(self.llm, "model", None) \
            or result.get("model")
        ext: dict[str, Any] = {"usage": usage_record(result.get("usage"), provider=self.provider,
                                                     model=str(model) if model else None,
                                                     latency_ms=seconds * 1000.0, prices=self.prices)}
        if self.price_record is not None:
            ext["prices"] = self.price_record
        return ext

    def text_sink(self, identity: Optional[EffectIdentity]) -> Optional[TextPublisher]:
        """Where streamed text goes (``None``: do not stream: nobody observes, or the client cannot)."""
        if identity is None or not identity.publishes or not getattr(self.llm, "streams", False):
            return None
        return TextPublisher(identity.progress)


def _streaming(request: dict[str, Any], sink: Optional[TextPublisher]) -> dict[str, Any]:
    return {**request, "on_text": sink} if sink is not None else request


def make_llm_call_handler(*, llm: AbstractCoreLLMClient, rate_limits: str = "fail",
                          prices: Optional[PriceTable] = None, slot_key: Optional[str] = None) -> EffectHandler:
    """The ``llm_call`` handler over ``llm`` (anything with ``generate(**kwargs) -> dict``).

    A client that also has ``agenerate`` (both of ours: AbstractCore's ``agenerate`` locally,
    ``httpx.AsyncClient`` remotely) gets an ``async`` handler, so LLM calls of many runs overlap
    under ``atick``/a concurrent worker; the retry policy, timeouts and redaction are the same.
    ``rate_limits``: ``"wait"`` makes a 429/503 with ``Retry-After`` a durable timer wait,
    ``"fail"`` a failed attempt. ``prices`` prices each call's ``ext.usage``; ``slot_key`` names
    the in-flight slot the call holds (default ``llm:<provider>``).
    """
    if rate_limits not in RATE_LIMIT_MODES:
        raise InvalidInputError(f"rate_limits must be one of {', '.join(RATE_LIMIT_MODES)}, not {rate_limits!r}")
    meter = _Meter(llm, prices, slot_key)

    if callable(getattr(llm, "agenerate", None)):
        async def handle_llm_call_async(run: RunState, effect: Effect,
                                        default_next_node: Optional[str] = None) -> EffectOutcome:
            request = _llm_request(effect)
            if isinstance(request, EffectOutcome):
                return request
            identity = current_effect()
            sink = meter.text_sink(identity)
            slot = identity.aslot(meter.slot_key) if identity is not None else contextlib.nullcontext()
            try:
                async with slot:
                    started = time.monotonic()
                    result = await llm.agenerate(**_streaming(request, sink))  # type: ignore[attr-defined]
                    seconds = time.monotonic() - started
            except Exception as exc:
                return _llm_failure(run, exc, rate_limits)
            finally:
                if sink is not None:
                    sink.flush()
            return _llm_outcome(result, meter, request, seconds)

        return handle_llm_call_async

    def handle_llm_call(run: RunState, effect: Effect, default_next_node: Optional[str] = None) -> EffectOutcome:
        request = _llm_request(effect)
        if isinstance(request, EffectOutcome):
            return request
        identity = current_effect()
        sink = meter.text_sink(identity)
        slot = identity.slot(meter.slot_key) if identity is not None else contextlib.nullcontext()
        try:
            with slot:
                started = time.monotonic()
                result = llm.generate(**_streaming(request, sink))
                seconds = time.monotonic() - started
        except Exception as exc:
            return _llm_failure(run, exc, rate_limits)
        finally:
            if sink is not None:
                sink.flush()
        return _llm_outcome(result, meter, request, seconds)

    return handle_llm_call


def _llm_request(effect: Effect) -> Any:
    """The ``generate`` keyword arguments for the effect, or the failed outcome that says what is wrong."""
    payload = effect.payload or {}
    prompt, messages = payload.get("prompt"), payload.get("messages")
    if not prompt and not messages:
        return EffectOutcome.failed("llm_call requires payload.prompt or payload.messages", retryable=False)
    params = payload.get("params")
    if params is not None and not isinstance(params, dict):
        return EffectOutcome.failed("llm_call payload.params must be an object", retryable=False)
    tools = payload.get("tools")
    if tools is not None and not isinstance(tools, list):
        return EffectOutcome.failed("llm_call payload.tools must be a list of tool definitions", retryable=False)
    return {"prompt": str(prompt or ""), "messages": messages, "system_prompt": payload.get("system_prompt"),
            "tools": tools, "params": params}


def _llm_failure(run: RunState, exc: Exception, rate_limits: str = "fail") -> EffectOutcome:
    outcome = _failure(exc, "llm_call")
    delay = exc.details.get("retry_after_s") if isinstance(exc, EffectFailedError) else None
    if rate_limits == "wait" and isinstance(delay, (int, float)) and not isinstance(delay, bool):
        logger.info("llm_call rate limited; waiting", run_id=run.run_id, node=run.current_node, seconds=delay)
        return EffectOutcome.delayed(float(delay), outcome.error or "rate limited")
    logger.warning("llm_call failed", run_id=run.run_id, node=run.current_node,
                   retryable=outcome.retryable, error=outcome.error)
    return outcome


def _llm_outcome(result: Any, meter: _Meter, request: dict[str, Any], seconds: float) -> EffectOutcome:
    if not isinstance(result, dict):
        return EffectOutcome.failed(
            f"llm_call: the LLM client returned {type(result).__name__}, not a dict", retryable=False
        )
    result = jsonable(result)
    return EffectOutcome.completed(result, ext=meter.ext(result, request, seconds))


def make_tool_calls_handler(*, tools: ToolExecutor) -> EffectHandler:
    """The ``tool_calls`` handler over ``tools`` (anything with ``execute(*, tool_calls) -> dict``).

    An executor that can run calls concurrently (``aexecute``, e.g. a
    :class:`~.tool_executor.LocalToolExecutor` with async tools or threads) gets an ``async``
    handler: the calls overlap, and each call's result is recorded in its own ledger record as
    it arrives, so after a crash only the calls without a result run again.
    """
    if callable(getattr(tools, "aexecute", None)) and getattr(tools, "concurrent", False):
        async def handle_tool_calls_async(run: RunState, effect: Effect,
                                          default_next_node: Optional[str] = None) -> EffectOutcome:
            calls = _calls_of(effect)
            if isinstance(calls, EffectOutcome):
                return calls
            identity = current_effect()
            try:
                result = await tools.aexecute(  # type: ignore[attr-defined]
                    tool_calls=calls, done=identity.parts if identity else None,
                    on_result=identity.record_part if identity and identity.recorder else None)
            except Exception as exc:
                outcome = _failure(exc, "tool_calls")
                logger.warning("tool executor failed", run_id=run.run_id, error=outcome.error)
                return outcome
            return _tool_outcome(run, effect, default_next_node, calls, result)

        return handle_tool_calls_async

    def handle_tool_calls(run: RunState, effect: Effect, default_next_node: Optional[str] = None) -> EffectOutcome:
        calls = _calls_of(effect)
        if isinstance(calls, EffectOutcome):
            return calls
        try:
            result = tools.execute(tool_calls=calls)
        except Exception as exc:
            outcome = _failure(exc, "tool_calls")
            logger.warning("tool executor failed", run_id=run.run_id, error=outcome.error)
            return outcome
        return _tool_outcome(run, effect, default_next_node, calls, result)

    return handle_tool_calls


def _calls_of(effect: Effect) -> Any:
    """The effect's normalised calls, or the failed outcome that says why there are none."""
    raw_calls = (effect.payload or {}).get("tool_calls")
    if not isinstance(raw_calls, list):
        return EffectOutcome.failed("tool_calls requires payload.tool_calls (a list)", retryable=False)
    try:
        return normalize_tool_calls(raw_calls)
    except InvalidInputError as exc:
        return EffectOutcome.failed(f"tool_calls: {exc}", retryable=False)


def _tool_outcome(run: RunState, effect: Effect, default_next_node: Optional[str], calls: list[dict[str, Any]],
                  result: Any) -> EffectOutcome:
    payload = effect.payload or {}
    if not isinstance(result, dict):
        return EffectOutcome.failed(
            f"tool_calls: the executor returned {type(result).__name__}, not a dict", retryable=False
        )
    result = jsonable(result)
    mode = result.get("mode") or "executed"
    if mode == "executed":
        return EffectOutcome.completed(result)
    # Pass-through: nothing ran. Park the run until a host executes (or refuses) the calls.
    pending = result.get("tool_calls")
    pending = normalize_tool_calls(pending) if isinstance(pending, list) else calls
    digest = canonical_sha256(pending)
    wait = WaitState(
        reason=WaitReason.EVENT,
        wait_key=str(payload.get("wait_key") or tool_calls_wait_key(run.run_id, digest)),
        resume_to_node=payload.get("resume_to_node") or default_next_node,
        result_key=effect.result_key,
        details={"mode": str(mode), "tool_calls": pending, "calls_sha256": digest},
    )
    return EffectOutcome.waiting(wait)


def build_effect_handlers(*, llm: AbstractCoreLLMClient, tools: ToolExecutor, rate_limits: str = "fail",
                          prices: Optional[PriceTable] = None, slot_key: Optional[str] = None) -> dict[EffectType, Any]:
    """``{EffectType.LLM_CALL: ..., EffectType.TOOL_CALLS: ...}`` for ``Runtime(effect_handlers=...)``.

    ``rate_limits="fail"`` (the default, as in 0.0.1: a handler's failure is a failed attempt);
    pass ``"wait"`` to make a 429/503 with ``Retry-After`` a durable timer wait instead.
    """
    return {
        EffectType.LLM_CALL: make_llm_call_handler(llm=llm, rate_limits=rate_limits, prices=prices,
                                                   slot_key=slot_key),
        EffectType.TOOL_CALLS: make_tool_calls_handler(tools=tools),
    }
