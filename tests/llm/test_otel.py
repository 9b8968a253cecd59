"""OpenTelemetry traces of runs, checked with the SDK's in-memory exporter.

A span per tick, per effect attempt and per LLM call, with the GenAI semantic-convention
attributes; one trace per run across processes (the trace id comes from the run id); without
the extra, nothing of OpenTelemetry is imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan  # noqa: E402
from abstractruntime.core.runtime import EffectOutcome  # noqa: E402
from abstractruntime.core.spec import WorkflowSpec  # noqa: E402
from abstractruntime.otel import instrument, root_span_id_of, trace_id_of  # noqa: E402
from abstractruntime.storage.store import FileStore  # noqa: E402


def llm(run: RunState, effect: Effect) -> EffectOutcome:
    return EffectOutcome.completed({"content": "hi"}, ext={"usage": {
        "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 42, "output_tokens": 7, "latency_ms": 5,
        "cost": 0.00001}})


def workflow() -> WorkflowSpec:
    return WorkflowSpec("traced", "ask", {
        "ask": lambda run, ctx: StepPlan("ask", effect=Effect(EffectType.LLM_CALL, {"prompt": "hi"}, "r"),
                                         next_node="wait"),
        "wait": lambda run, ctx: StepPlan("wait", effect=Effect(EffectType.ASK_USER, {"prompt": "ok?"}, "a"),
                                          next_node="done"),
        "done": lambda run, ctx: StepPlan("done", complete_output={"ok": True})})


def traced(tmp_path: Path) -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rt = FileStore(tmp_path, durability="none").runtime(effect_handlers={EffectType.LLM_CALL: llm})
    instrument(rt, tracer_provider=provider)
    return rt, exporter


def test_spans_per_tick_effect_and_llm_call_with_genai_attributes(tmp_path: Path) -> None:
    rt, exporter = traced(tmp_path)
    wf = workflow()
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.WAITING
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"abstractruntime.tick", "abstractruntime.effect llm_call", "chat gpt-4o-mini",
                          "abstractruntime.effect ask_user"}
    chat, effect, tick = spans["chat gpt-4o-mini"], spans["abstractruntime.effect llm_call"], \
        spans["abstractruntime.tick"]
    assert chat.kind is SpanKind.CLIENT
    expected = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 42,
                "gen_ai.usage.output_tokens": 7}
    assert {k: (chat.attributes or {}).get(k) for k in expected} == expected
    assert chat.parent is not None and chat.parent.span_id == effect.context.span_id
    assert effect.parent is not None and effect.parent.span_id == tick.context.span_id
    assert tick.parent is not None and tick.parent.span_id == root_span_id_of(run_id)
    assert {s.context.trace_id for s in spans.values()} == {trace_id_of(run_id)}
    assert (tick.attributes or {})["abstractruntime.status"] == "waiting"
    assert (effect.attributes or {})["abstractruntime.effect.outcome"] == "completed"

    exporter.clear()
    rt.resume(workflow=wf, run_id=run_id, wait_id=state.waiting.wait_id, payload={"answer": "yes"})  # type: ignore
    (tick2,) = exporter.get_finished_spans()
    assert tick2.context.trace_id == trace_id_of(run_id)  # the same trace, a later tick
    assert (tick2.attributes or {})["abstractruntime.status"] == "completed"


def test_a_failed_run_and_a_failed_attempt_are_errors(tmp_path: Path) -> None:
    def broken(run: RunState, effect: Effect) -> EffectOutcome:
        return EffectOutcome.failed("provider down", retryable=False)

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rt = FileStore(tmp_path, durability="none").runtime(effect_handlers={EffectType.LLM_CALL: broken})
    instrument(rt, tracer_provider=provider)
    wf = workflow()
    run_id = rt.start(workflow=wf)
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.FAILED
    statuses = {s.name: s.status.status_code for s in exporter.get_finished_spans()}
    assert statuses["abstractruntime.tick"] is StatusCode.ERROR
    assert statuses["chat"] is StatusCode.ERROR and statuses["abstractruntime.effect llm_call"] is StatusCode.ERROR


SCRIPT = textwrap.dedent('''
    import json, sys
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    sys.path.insert(0, sys.argv[3])
    from test_otel import workflow, llm
    from abstractruntime.core.models import EffectType
    from abstractruntime.otel import instrument
    from abstractruntime.storage.store import FileStore

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rt = FileStore(sys.argv[1], durability="none").runtime(effect_handlers={EffectType.LLM_CALL: llm})
    instrument(rt, tracer_provider=provider)
    wf = workflow()
    if sys.argv[2] == "start":
        run_id = rt.start(workflow=wf, run_id="r-across")
        rt.tick(workflow=wf, run_id=run_id)
    else:
        rt.resume(workflow=wf, run_id="r-across", wait_id=rt.get_state("r-across").waiting.wait_id,
                  payload={"answer": "yes"})
    print(json.dumps([[s.name, s.context.trace_id] for s in exporter.get_finished_spans()]))
''')


def test_one_trace_per_run_across_processes(tmp_path: Path) -> None:
    script = tmp_path / "trace_run.py"
    script.write_text(SCRIPT)
    here = str(Path(__file__).resolve().parent)
    first = subprocess.run([sys.executable, str(script), str(tmp_path / "store"), "start", here],
                           capture_output=True, text=True, timeout=60)
    second = subprocess.run([sys.executable, str(script), str(tmp_path / "store"), "resume", here],
                            capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    spans = json.loads(first.stdout) + json.loads(second.stdout)
    assert len(spans) == 5 and {trace for _, trace in spans} == {trace_id_of("r-across")}


def test_without_instrumenting_nothing_of_opentelemetry_is_imported(tmp_path: Path) -> None:
    code = textwrap.dedent(f'''
        import sys
        import abstractruntime, abstractruntime.otel, abstractruntime.equip, abstractruntime.watch
        import abstractruntime.usage
        from abstractruntime.core.models import Effect, EffectType, StepPlan
        from abstractruntime.core.spec import WorkflowSpec
        from abstractruntime.equip import equip
        from abstractruntime.storage.store import FileStore
        store = FileStore({str(tmp_path)!r})
        rt = equip(store.runtime(), store, limits={{"llm:x": 2}})
        wf = WorkflowSpec("w", "a", {{"a": lambda run, ctx: StepPlan("a", complete_output={{}})}})
        rt.tick(workflow=wf, run_id=rt.start(workflow=wf))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("opentelemetry", "httpx", "abstractcore"))
        assert not loaded, loaded
    ''')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_instrument_without_the_extra_says_which_extra(tmp_path: Path) -> None:
    code = textwrap.dedent(f'''
        import sys
        sys.modules["opentelemetry"] = None  # as if the extra were not installed
        from abstractruntime.core.errors import MissingExtraError
        from abstractruntime.otel import instrument
        from abstractruntime.storage.store import FileStore
        try:
            instrument(FileStore({str(tmp_path)!r}).runtime())
        except MissingExtraError as exc:
            print(exc)
    ''')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "otel" in proc.stdout, proc.stdout + proc.stderr
