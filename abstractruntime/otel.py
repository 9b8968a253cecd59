"""OpenTelemetry traces of runs: a span per tick, per effect attempt and per LLM call.

Needs the ``[otel]`` extra (``pip install -e '.[otel]'``: the OpenTelemetry API; configure an
SDK and an exporter as for any instrumented program). Nothing of OpenTelemetry is imported
until :func:`instrument` is called::

    from abstractruntime.otel import instrument
    instrument(runtime)                      # the global tracer provider, or tracer_provider=...

**One trace per run**, across processes and days: the trace id is derived from the run id
(:func:`trace_id_of`), and every tick span's parent is the run's root span id
(:func:`root_span_id_of`), so a run resumed next week by another worker adds to the same
trace. Spans:

- ``abstractruntime.tick`` (internal): one tick, resume or retry of a run —
  ``abstractruntime.run_id``, ``abstractruntime.workflow_id``, ``abstractruntime.status``
  (after the tick), ``abstractruntime.node``;
- ``abstractruntime.effect <type>`` (internal): one attempt of an effect's handler —
  ``abstractruntime.effect.id``, ``.type``, ``.attempt``, ``.outcome``, ``abstractruntime.node``;
- ``chat <model>`` (client), under an ``llm_call`` effect: the LLM call, with the GenAI
  semantic-convention attributes ``gen_ai.operation.name`` (``chat``), ``gen_ai.system`` and
  ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
  ``gen_ai.usage.output_tokens`` (from the call's recorded ``ext.usage``), and
  ``abstractruntime.cost`` when the call was priced.

Tracing is an observer (:mod:`abstractruntime.core.observe`): it reads what the runtime
reports and never changes what a run does.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any, Mapping, Optional

INSTRUMENTATION = "abstractruntime"


def trace_id_of(run_id: str) -> int:
    """The run's 128-bit trace id: the same in every process, for as long as the run lives."""
    value = int(hashlib.sha256(f"abstractruntime/trace/{run_id}".encode("utf-8")).hexdigest()[:32], 16)
    return value or 1


def root_span_id_of(run_id: str) -> int:
    """The 64-bit id of the run's root span, the parent of every tick span."""
    value = int(hashlib.sha256(f"abstractruntime/span/{run_id}".encode("utf-8")).hexdigest()[:16], 16)
    return value or 1


def _otel() -> Any:
    from .core.errors import MissingExtraError

    try:
        from opentelemetry import trace  # noqa: PLC0415 - the optional [otel] extra, imported on use
    except ImportError:
        raise MissingExtraError("opentelemetry-api", "otel", "Tracing") from None
    return trace


class TracingObserver:
    """The observer :func:`instrument` adds: it turns ticks, effects and LLM calls into spans."""

    def __init__(self, tracer_provider: Any = None) -> None:
        trace = _otel()
        self._trace = trace
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self._tracer = provider.get_tracer(INSTRUMENTATION)
        self._ticks: dict[str, Any] = {}  # run id -> its tick span in this process
        self._guard = threading.Lock()

    def _run_context(self, run_id: str) -> Any:
        trace = self._trace
        parent = trace.SpanContext(trace_id=trace_id_of(run_id), span_id=root_span_id_of(run_id), is_remote=True,
                                   trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
        return trace.set_span_in_context(trace.NonRecordingSpan(parent))

    def tick_started(self, run_id: str, workflow_id: str, status: str) -> Any:
        """Open the tick span (child of the run's root span)."""
        span = self._tracer.start_span("abstractruntime.tick", context=self._run_context(run_id), attributes={
            "abstractruntime.run_id": run_id, "abstractruntime.workflow_id": workflow_id,
            "abstractruntime.status_before": status})
        with self._guard:
            self._ticks[run_id] = span
        return (run_id, span)

    def tick_ended(self, token: Any, state: Any, error: Optional[BaseException]) -> None:
        """Close the tick span with the run's status (and the error that escaped, if any)."""
        run_id, span = token
        with self._guard:
            if self._ticks.get(run_id) is span:
                del self._ticks[run_id]
        if state is not None:
            span.set_attribute("abstractruntime.status", state.status.value)
            span.set_attribute("abstractruntime.node", state.current_node)
            if state.status.value == "failed":
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(state.error or "")[:200]))
        if error is not None:
            span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, type(error).__name__))
        span.end()

    def effect_started(self, run_id: str, effect_id: int, effect_type: str, attempt: int, node_id: str) -> Any:
        """Open the effect span (and, for an ``llm_call``, the LLM call's span under it)."""
        trace = self._trace
        with self._guard:
            tick = self._ticks.get(run_id)
        context = trace.set_span_in_context(tick) if tick is not None else self._run_context(run_id)
        span = self._tracer.start_span(f"abstractruntime.effect {effect_type}", context=context, attributes={
            "abstractruntime.run_id": run_id, "abstractruntime.effect.id": effect_id,
            "abstractruntime.effect.type": effect_type, "abstractruntime.effect.attempt": attempt,
            "abstractruntime.node": node_id})
        call = None
        if effect_type == "llm_call":
            call = self._tracer.start_span("chat", context=trace.set_span_in_context(span),
                                           kind=trace.SpanKind.CLIENT,
                                           attributes={"gen_ai.operation.name": "chat",
                                                       "abstractruntime.run_id": run_id})
        return (span, call)

    def effect_ended(self, token: Any, status: str, ext: Optional[Mapping[str, Any]], error: Optional[str]) -> None:
        """Close the spans with the outcome and, for an LLM call, its recorded usage."""
        span, call = token
        span.set_attribute("abstractruntime.effect.outcome", status)
        if status == "failed":
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error or "")[:200]))
        if call is not None:
            usage = ext.get("usage") if isinstance(ext, Mapping) else None
            if isinstance(usage, Mapping):
                _genai_attributes(call, usage)
            if status == "failed":
                call.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error or "")[:200]))
            call.end()
        span.end()


def _genai_attributes(span: Any, usage: Mapping[str, Any]) -> None:
    provider, model = usage.get("provider"), usage.get("model")
    if isinstance(model, str) and model:
        span.update_name(f"chat {model}")
        span.set_attribute("gen_ai.request.model", model)
    if isinstance(provider, str) and provider:
        span.set_attribute("gen_ai.system", provider)
        span.set_attribute("gen_ai.provider.name", provider)
    for name in ("input_tokens", "output_tokens"):
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            span.set_attribute(f"gen_ai.usage.{name}", value)
    cost = usage.get("cost")
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        span.set_attribute("abstractruntime.cost", float(cost))


def instrument(runtime: Any, *, tracer_provider: Any = None) -> TracingObserver:
    """Trace ``runtime``'s runs (adds a :class:`TracingObserver` to ``runtime.observers``).

    ``tracer_provider`` defaults to OpenTelemetry's global one. Raises
    :class:`~abstractruntime.core.errors.MissingExtraError` without the ``[otel]`` extra.
    """
    observer = TracingObserver(tracer_provider)
    runtime.observers.append(observer)
    return observer


__all__ = ["TracingObserver", "instrument", "root_span_id_of", "trace_id_of"]
