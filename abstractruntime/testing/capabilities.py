"""Capability conformance: each capability a store declares (``core.ports.Capability``) is tested,
and only those: a store that does not declare one skips its tests.

A store's class (or, for a wrapper, its instance) lists what it does beyond the 0.0.1 port in
``capabilities``; the runtime relies on exactly that list (``has_capability``), never on probing
for methods. So a store that declares a capability must honour its whole contract, which this
suite checks, and must have every method the capability names.
"""

from __future__ import annotations

from typing import Any

import pytest

from ..core.errors import LedgerConflictError, RunLockedError
from ..core.models import Effect, EffectType, RunState, StepPlan
from ..core.ports import Capability, LedgerHead, QueryableRunStore, StoredCheckpoint, has_capability
from ..core.records import seal
from ..core.spec import WorkflowSpec
from ..storage.ledger_chain import verify_ledger_chain
from .backend import StoreBackend

# The methods each capability promises.
METHODS: dict[Capability, tuple[str, ...]] = {
    Capability.CHAINED: ("head",),
    Capability.SEALED_LINES: ("append_lines", "read_after", "stored", "record_at", "records_at"),
    Capability.POSITION_TOKENS: ("position_token", "position_token_at"),
    Capability.ANCHORS: ("put_anchor", "find_anchor"),
    Capability.SECRETS: ("put_secrets", "get_secrets", "retain_secrets"),
    Capability.PEEK_HEAD: ("peek_head",),
    Capability.SEGMENTS: ("segment_due", "seal_segment"),
    Capability.CHECKPOINTS: ("save_checkpoint", "load_checkpoint"),
    Capability.LOCKS: ("lock",),
    Capability.CHECKPOINT_TOKENS: ("checkpoint_token", "written_token"),
    Capability.QUERIES: ("list_runs", "list_due_wait_until", "list_children"),
    Capability.WAITING_ON: ("list_waiting_on",),
    Capability.WORK_CLAIMS: ("work_claims",),
    Capability.WAKE: ("wake",),
    Capability.EDITS: ("save",),
    Capability.LEDGER_MARKS: ("mark_ahead", "list_ahead"),
}


def _needs(store: Any, capability: Capability) -> None:
    if not has_capability(store, capability):
        pytest.skip(f"{type(store).__name__} does not declare {capability.value}")


def _sealed(run_id: str, count: int, head: LedgerHead = LedgerHead()) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Format-3 records as the runtime seals them (compact: defaults left out)."""
    docs, lines = [], []
    for _ in range(count):
        fields: dict[str, Any] = {"format": 3, "seq": head.seq + 1, "kind": "node", "status": "completed",
                                  "at": "2030-01-01T00:00:00.000000+00:00", "prev_hash": head.head_hash,
                                  "node_id": "n", "delta": {"current_node": "n"}}
        if head.seq == 0:
            fields["run_id"] = run_id
        doc, line = seal(fields)
        docs.append(doc)
        lines.append(line)
        head = LedgerHead(doc["seq"], doc["record_hash"])
    return docs, lines


def _one_question() -> WorkflowSpec:
    def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", next_node="done", effect=Effect(EffectType.ASK_USER, {"prompt": "?"}, "answer"))

    return WorkflowSpec("caps", "ask", {"ask": ask, "done": lambda run, ctx: StepPlan("done", complete_output={})})


class CapabilityConformance:
    """Every capability the backend's stores declare, tested against its contract."""

    def test_declared_capabilities_have_their_methods(self, backend: StoreBackend) -> None:
        for store in (backend.runs, backend.ledger):
            for capability in getattr(store, "capabilities", frozenset()):
                missing = [m for m in METHODS[capability] if not callable(getattr(store, m, None))]
                assert not missing, f"{type(store).__name__} declares {capability.value} but lacks {missing}"

    # -- ledger stores --------------------------------------------------------------------------

    def test_sealed_lines_are_kept_exactly_and_appended_conditionally(self, backend: StoreBackend) -> None:
        ledger = backend.ledger
        _needs(ledger, Capability.SEALED_LINES)
        docs, lines = _sealed("c1", 3)
        head = ledger.append_lines("c1", docs[:2], lines[:2], expect=LedgerHead())
        assert head.seq == 2
        stale_docs, stale_lines = _sealed("c1", 1)  # a second writer that read the empty ledger
        with pytest.raises(LedgerConflictError):
            ledger.append_lines("c1", stale_docs, stale_lines, expect=LedgerHead())
        ledger.append_lines("c1", docs[2:], lines[2:], expect=head)
        _, stored = ledger.read_after("c1", LedgerHead())
        assert [{k: v for k, v in d.items() if k != "signature"} for d in stored] == docs
        assert ledger.stored("c1") == stored
        assert ledger.record_at("c1", LedgerHead(2, docs[1]["record_hash"])) == docs[1]
        listed = ledger.list("c1")
        assert [r["seq"] for r in listed] == [1, 2, 3] and all(r["run_id"] == "c1" for r in listed)

    def test_chained_ledgers_verify(self, backend: StoreBackend) -> None:
        ledger = backend.ledger
        _needs(ledger, Capability.CHAINED)
        runtime = backend.runtime()
        run_id = runtime.start(workflow=_one_question())
        runtime.tick(workflow=_one_question(), run_id=run_id)
        records = ledger.list(run_id)
        assert verify_ledger_chain(records)["ok"] and ledger.head(run_id).head_hash == records[-1]["record_hash"]

    def test_position_tokens_move_with_every_append(self, backend: StoreBackend) -> None:
        ledger = backend.ledger
        _needs(ledger, Capability.POSITION_TOKENS)
        _needs(ledger, Capability.SEALED_LINES)
        docs, lines = _sealed("c2", 2)
        ledger.append_lines("c2", docs[:1], lines[:1], expect=LedgerHead())
        before = ledger.position_token("c2")
        head = ledger.append_lines("c2", docs[1:], lines[1:], expect=LedgerHead(1, docs[0]["record_hash"]))
        after = ledger.position_token("c2")
        assert before != after
        at = ledger.position_token_at("c2", head)
        assert at is None or at == after

    def test_anchors_are_found_at_or_before_a_position(self, backend: StoreBackend) -> None:
        ledger = backend.ledger
        _needs(ledger, Capability.ANCHORS)
        assert ledger.find_anchor("c3", 10) is None
        for seq in (5, 9):
            ledger.put_anchor("c3", {"seq": seq, "head_hash": f"h{seq}", "offset": None, "checkpoint": {"n": seq}})
        assert ledger.find_anchor("c3", 4) is None
        assert ledger.find_anchor("c3", 8)["checkpoint"] == {"n": 5}
        assert ledger.find_anchor("c3", 100)["head_hash"] == "h9"

    def test_secrets_are_kept_with_their_batch_and_retained_on_demand(self, backend: StoreBackend) -> None:
        ledger = backend.ledger
        _needs(ledger, Capability.SECRETS)
        _needs(ledger, Capability.SEALED_LINES)
        entries = [{"key": "00" * 32}, {"commitment": "a" * 64, "value": "one"}, {"commitment": "b" * 64, "value": 2},
                   {"pin": "snap-1", "commitments": ["b" * 64]}]
        ledger.put_secrets("c4", entries)
        docs, lines = _sealed("c4", 1)
        ledger.append_lines("c4", docs, lines, expect=LedgerHead())
        reader = backend.reopen().ledger if backend.reopen is not None else ledger
        assert reader.get_secrets("c4") == entries
        ledger.retain_secrets("c4", ["a" * 64])
        assert ledger.get_secrets("c4") == entries  # the pin keeps "b" too
        ledger.retain_secrets("c4", [])
        assert ledger.get_secrets("c4") == [entries[0], entries[2], entries[3]]

    def test_peek_head_is_the_head(self, backend: StoreBackend) -> None:
        ledger = backend.ledger
        _needs(ledger, Capability.PEEK_HEAD)
        runtime = backend.runtime()
        run_id = runtime.start(workflow=_one_question())
        assert ledger.peek_head(run_id) == ledger.head(run_id) or \
            ledger.peek_head(run_id).seq == ledger.head(run_id).seq

    # -- run stores -----------------------------------------------------------------------------

    def test_checkpoints_round_trip_whole(self, backend: StoreBackend) -> None:
        runs = backend.runs
        _needs(runs, Capability.CHECKPOINTS)
        run = RunState.new(workflow_id="wf", entry_node="a", run_id="c5")
        state = {"run": run.to_dict(), "kernel": {"effects": 1, "pending": None, "metadata": {"m": [1]},
                                                  "workflow": None, "origin": None}}
        stored = StoredCheckpoint(state=state, ledger=LedgerHead(4, "cd" * 32, None),
                                  signature=None, values=[[2, 100]])
        runs.save_checkpoint(stored)
        loaded = runs.load_checkpoint("c5")
        assert loaded is not None and loaded.state == state and loaded.ledger.seq == 4
        assert loaded.ledger.head_hash == "cd" * 32 and loaded.values == [[2, 100]]

    def test_checkpoint_tokens_move_with_every_save(self, backend: StoreBackend) -> None:
        runs = backend.runs
        _needs(runs, Capability.CHECKPOINT_TOKENS)
        runtime = backend.runtime()
        run_id = runtime.start(workflow=_one_question())
        before = runs.checkpoint_token(run_id)
        runtime.tick(workflow=_one_question(), run_id=run_id)
        after = runs.checkpoint_token(run_id)
        assert before != after
        written = runs.written_token(run_id)
        assert written is None or written == after

    def test_locks_refuse_a_second_holder(self, backend: StoreBackend) -> None:
        runs = backend.runs
        _needs(runs, Capability.LOCKS)
        runtime = backend.runtime()
        run_id = runtime.start(workflow=_one_question())
        with runs.lock(run_id):
            with pytest.raises(RunLockedError):
                with runs.lock(run_id):
                    pass

    def test_queries_are_the_protocol(self, backend: StoreBackend) -> None:
        _needs(backend.runs, Capability.QUERIES)
        assert isinstance(backend.runs, QueryableRunStore)

    def test_waiting_on_finds_the_waiting_runs(self, backend: StoreBackend) -> None:
        runs = backend.runs
        _needs(runs, Capability.WAITING_ON)
        runtime = backend.runtime()
        wf = _one_question()
        run_id = runtime.start(workflow=wf)
        state = runtime.tick(workflow=wf, run_id=run_id)
        assert state.waiting is not None and state.waiting.wait_key
        found = runs.list_waiting_on(state.waiting.wait_key)
        assert [r.run_id for r in found] == [run_id]

    def test_edits_are_recorded_in_the_ledger_first(self, backend: StoreBackend) -> None:
        runs = backend.runs
        _needs(runs, Capability.EDITS)
        runtime = backend.runtime()
        wf = _one_question()
        run_id = runtime.start(workflow=wf)
        runtime.tick(workflow=wf, run_id=run_id)
        run = runs.load(run_id)
        assert run is not None
        run.vars["note"] = "changed by hand"
        runs.save(run)
        last = backend.ledger.list(run_id)[-1]
        assert last["kind"] == "edit"  # the edit is in the hashed chain before anything acts on it
        assert runtime.get_state(run_id).vars["note"] == "changed by hand"


__all__ = ["CapabilityConformance", "METHODS"]
