"""Shared helpers for the provenance tests: a demo workflow on a real file store, and the
tools an attacker would use on the files (written from the documented recipe, not by calling
the code under test)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from independent_verifier import jcs, record_hash as independent_record_hash

from abstractruntime.core.effects import EffectOutcome
from abstractruntime.core.models import Effect, EffectType, RunState, StepPlan
from abstractruntime.core.runtime import Runtime
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.base import StoredCheckpoint
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore
from abstractruntime.storage.store import FileStore


def _start(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("start", next_node="fetch")


def _fetch(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("fetch", next_node="ask", effect=Effect(EffectType.LLM_CALL, {"prompt": "hi"}, result_key="llm"))


def _ask(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("ask", next_node="fetch2",
                    effect=Effect(EffectType.ASK_USER, {"prompt": "approve?"}, result_key="answer"))


def _fetch2(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("fetch2", next_node="done",
                    effect=Effect(EffectType.LLM_CALL, {"prompt": "again"}, result_key="llm2"))


def _done(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("done", complete_output={"answer": run.vars.get("answer")})


DEMO = WorkflowSpec("demo", "start", {"start": _start, "fetch": _fetch, "ask": _ask, "fetch2": _fetch2,
                                      "done": _done})


def _question(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("question", next_node="done",
                    effect=Effect(EffectType.ASK_USER, {"prompt": "approve?"}, result_key="answer"))


# A question and nothing else: no effect runs after the answer.
ASK_ONLY = WorkflowSpec("ask-only", "question", {"question": _question, "done": _done})


def fake_llm(run: RunState, effect: Effect) -> EffectOutcome:
    """A deterministic stand-in for an LLM: echoes the prompt."""
    return EffectOutcome.completed({"content": f"echo: {effect.payload.get('prompt')}"})


def open_demo(root: Path, **runtime_kwargs: Any) -> tuple[FileStore, Runtime]:
    """A file store (durability "none": these tests are about content, not power loss) and a runtime."""
    store = FileStore(root, durability="none")
    runtime_kwargs.setdefault("effect_handlers", {EffectType.LLM_CALL: fake_llm})
    return store, store.runtime(**runtime_kwargs)


def start_waiting(runtime: Runtime, run_id: Optional[str] = None) -> RunState:
    """Start the demo and tick it to its question (ledger seq 1-6)."""
    rid = runtime.start(workflow=DEMO, run_id=run_id)
    return runtime.tick(workflow=DEMO, run_id=rid)


def finish(runtime: Runtime, state: RunState) -> RunState:
    """Answer the question; the run completes (ledger seq 7-10)."""
    assert state.waiting is not None
    return runtime.resume(workflow=DEMO, run_id=state.run_id, wait_key=state.waiting.wait_key,
                          payload={"answer": "yes"})


def run_demo(runtime: Runtime, run_id: Optional[str] = None) -> str:
    """A completed demo run (10 records: start, node, effect x2, ask x2, resume, effect x2, complete)."""
    return finish(runtime, start_waiting(runtime, run_id)).run_id


# -- the attacker's toolbox -------------------------------------------------------------------

def ledger_path(root: Path, run_id: str) -> Path:
    return root / "runs" / run_id / "ledger.jsonl"


def checkpoint_path(root: Path, run_id: str) -> Path:
    return root / "runs" / run_id / "run.json"


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Write records back as a careful forger would: each line in its canonical form."""
    path.write_bytes(b"".join(line_of(r) + b"\n" for r in records))


def line_of(record: dict[str, Any]) -> bytes:
    """A record's line: RFC 8785 for formats 3 and 4 (docs/file-format.md), plain JSON for older ones."""
    if record.get("format", 1) >= 3:
        return jcs(record).encode("utf-8")
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def documented_hash(record: dict[str, Any]) -> str:
    """sha256 of the canonical form of the record minus record_hash and signature (docs/file-format.md),
    computed with the independent verifier's JCS, not the package's."""
    return independent_record_hash(record)


def rehash(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records (copies) with each ``prev_hash`` / ``record_hash`` made consistent again, their
    state digests left as they are (a forger who cannot replay the state)."""
    prev = None
    out = []
    for record in records:
        record = dict(record)
        record["prev_hash"] = prev
        record["record_hash"] = prev = documented_hash(record)
        out.append(record)
    return out


def rechain(records: list[dict[str, Any]], *, renumber: bool = True) -> list[dict[str, Any]]:
    """Give every record a consistent seq / prev_hash / record_hash — and every state digest the
    state the forged records rebuild — as a careful forger would."""
    prev: Optional[str] = None
    out = []
    replay = _Replay(_run_id_of(records))
    for index, record in enumerate(records, start=1):
        record = dict(record)
        if renumber:
            record["seq"] = index
        record["prev_hash"] = prev
        digest = replay.apply(record)
        if "state" in record:
            record["state"] = digest
        record["record_hash"] = prev = documented_hash(record)
        out.append(record)
    return out


def _run_id_of(records: list[dict[str, Any]]) -> str:
    return str(records[0].get("run_id")) if records else ""


class _Replay:
    """The forger's tool for state digests: the library's own replay (anyone can run it)."""

    def __init__(self, run_id: str) -> None:
        from abstractruntime.core.state import StateImage
        from abstractruntime.core.values import ValueTable

        self.run_id, self.image, self.table = run_id, StateImage.blank(run_id), ValueTable()

    def apply(self, record: dict[str, Any]) -> Optional[str]:
        from abstractruntime.core.wal import apply_record, record_parts

        if record.get("format") not in (3, 4):
            return None
        for part in record_parts(record):
            self.table.collect(part, int(record.get("seq") or 0))
        apply_record(self.image, record, self.table, self.run_id)
        return self.image.digest()

    def document(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.image.document()))


def read_checkpoint_doc(root: Path, run_id: str) -> dict[str, Any]:
    return json.loads(checkpoint_path(root, run_id).read_bytes())


def write_checkpoint_doc(root: Path, run_id: str, doc: dict[str, Any]) -> None:
    checkpoint_path(root, run_id).write_bytes(json.dumps(doc).encode("utf-8"))


def point_checkpoint_at(root: Path, run_id: str, records: list[dict[str, Any]]) -> None:
    """Make run.json claim the last of ``records`` as its head, as a careful forger would: the state
    the records rebuild there, whose digest the head record then carries (it is re-hashed, and the
    ledger file rewritten with it; ``records`` is updated in place)."""
    doc = read_checkpoint_doc(root, run_id)
    last = records[-1]
    if last.get("format") in (3, 4):
        replay = _Replay(run_id)
        for record in records:
            digest = replay.apply(record)
        last["state"] = digest
        last["record_hash"] = documented_hash(last)
        if isinstance(last.get("signature"), dict):
            last["signature"] = None  # it named the old hash; a forger without the key cannot re-sign
        write_records(ledger_path(root, run_id), records)
        doc["state"] = replay.document()
    doc["ledger"] = {"seq": last["seq"], "head_hash": last["record_hash"]}
    write_checkpoint_doc(root, run_id, doc)


def problem_types(report: Any) -> set[str]:
    return {p.type for p in report.problems}


def tree_bytes(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` with its bytes and mtime, to prove nothing was modified."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


class CrashingRunStore(JsonFileRunStore):
    """A real file run store whose next checkpoint write can be made to fail, as if the process
    died after the ledger append and before the checkpoint replace."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, durability="none")
        self.crash_next = False

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        if self.crash_next:
            self.crash_next = False
            raise SimulatedCrash("the process died before the checkpoint was written")
        super().save_checkpoint(checkpoint)


class SimulatedCrash(Exception):
    """Raised by CrashingRunStore in place of a process death."""


def crashing_runtime(root: Path, **kwargs: Any) -> tuple[CrashingRunStore, Runtime]:
    """A runtime over the store at ``root`` whose checkpoint writes can be failed on demand."""
    runs = CrashingRunStore(root)
    kwargs.setdefault("effect_handlers", {EffectType.LLM_CALL: fake_llm})
    return runs, Runtime(run_store=runs, ledger_store=JsonlLedgerStore(root, durability="none"), **kwargs)
