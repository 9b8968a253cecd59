"""The tamper matrix: every way of editing a run's files is detected, each by the layer that can.

Every test starts from a real completed run in a file store (10 ledger records; see
prov_helpers.run_demo), tampers with the files the way an attacker with write access would,
and checks that ``verify_run`` names the right problem, seq and line. The attacks a plain
hash chain cannot see (truncation with a rewritten checkpoint, a full rewrite, a rollback
without later effects) are shown to pass the plain check, and then to be caught by an
expected head, a bookmark or a signature.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.storage.signing import Ed25519Signer
from abstractruntime.storage.verify import verify_run

from abstractruntime.core.errors import RunNotWaitingError

from prov_helpers import (
    ASK_ONLY,
    DEMO,
    checkpoint_path,
    documented_hash,
    finish,
    ledger_path,
    open_demo,
    point_checkpoint_at,
    problem_types,
    read_checkpoint_doc,
    read_records,
    rechain,
    run_demo,
    start_waiting,
    write_checkpoint_doc,
    write_records,
)


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, str]:
    """A completed demo run, verified clean before any tampering."""
    root = tmp_path / "store"
    store, runtime = open_demo(root)
    run_id = run_demo(runtime, "victim")
    assert verify_run(root, run_id).ok
    store.close()
    return root, run_id


def the_problem(report: Any, kind: str) -> Any:
    return next(p for p in report.problems if p.type == kind)


# -- what the chain sees ------------------------------------------------------------------------

def test_edited_field_is_a_hash_mismatch_at_that_line(demo: tuple[Path, str]) -> None:
    root, run_id = demo
    records = read_records(ledger_path(root, run_id))
    records[3]["result"]["content"] = "a different answer"
    write_records(ledger_path(root, run_id), records)

    report = verify_run(root, run_id)
    assert not report.ok
    assert problem_types(report) == {"record_hash_mismatch"}
    problem = the_problem(report, "record_hash_mismatch")
    assert (problem.seq, problem.line) == (4, 4)
    assert "edited" in problem.message


def test_edited_and_rehashed_record_breaks_the_next_link(demo: tuple[Path, str]) -> None:
    root, run_id = demo
    records = read_records(ledger_path(root, run_id))
    records[3]["result"]["content"] = "a different answer"
    records[3]["record_hash"] = documented_hash(records[3])
    write_records(ledger_path(root, run_id), records)

    report = verify_run(root, run_id)
    assert problem_types(report) == {"prev_hash_mismatch"}
    problem = the_problem(report, "prev_hash_mismatch")
    assert (problem.seq, problem.line) == (5, 5)
    assert problem.details["actual"] != problem.details["expected"] == records[3]["record_hash"]


def test_edited_and_rehashed_head_contradicts_the_checkpoint(demo: tuple[Path, str]) -> None:
    root, run_id = demo
    records = read_records(ledger_path(root, run_id))
    records[-1]["result"]["output"] = {"answer": {"answer": "no"}}
    records[-1]["record_hash"] = documented_hash(records[-1])
    write_records(ledger_path(root, run_id), records)

    report = verify_run(root, run_id)
    assert problem_types(report) == {"checkpoint_head_mismatch"}
    assert the_problem(report, "checkpoint_head_mismatch").line == 10


def test_deleted_record(demo: tuple[Path, str]) -> None:
    root, run_id = demo
    records = read_records(ledger_path(root, run_id))
    del records[4]
    write_records(ledger_path(root, run_id), records)

    report = verify_run(root, run_id)
    assert problem_types(report) == {"seq_mismatch", "prev_hash_mismatch"}
    gap = the_problem(report, "seq_mismatch")
    assert (gap.seq, gap.line, gap.details["expected_seq"]) == (6, 5, 5)
    assert "missing" in gap.message
    assert report.count == 9


def test_inserted_record(demo: tuple[Path, str]) -> None:
    root, run_id = demo
    records = read_records(ledger_path(root, run_id))
    forged = dict(records[3], result={"content": "injected"}, seq=5, prev_hash=records[3]["record_hash"])
    forged["record_hash"] = documented_hash(forged)
    records.insert(4, forged)
    write_records(ledger_path(root, run_id), records)

    report = verify_run(root, run_id)
    assert problem_types(report) == {"seq_mismatch", "prev_hash_mismatch"}
    # The forged record itself links correctly; the original that follows it does not.
    assert {(p.seq, p.line) for p in report.problems} == {(5, 6)}


def test_swapped_records(demo: tuple[Path, str]) -> None:
    root, run_id = demo
    records = read_records(ledger_path(root, run_id))
    records[4], records[5] = records[5], records[4]
    write_records(ledger_path(root, run_id), records)

    report = verify_run(root, run_id)
    assert problem_types(report) == {"seq_mismatch", "prev_hash_mismatch"}
    assert min(p.line for p in report.problems) == 5
    assert "out of order" in the_problem(report, "seq_mismatch").message


def test_duplicated_record(demo: tuple[Path, str]) -> None:
    root, run_id = demo
    records = read_records(ledger_path(root, run_id))
    records.insert(4, records[3])
    write_records(ledger_path(root, run_id), records)

    report = verify_run(root, run_id)
    assert problem_types(report) == {"seq_mismatch", "prev_hash_mismatch"}
    repeat = the_problem(report, "seq_mismatch")
    assert (repeat.seq, repeat.line) == (4, 5)


def test_truncated_tail_is_caught_by_the_checkpoint(demo: tuple[Path, str]) -> None:
    root, run_id = demo
    records = read_records(ledger_path(root, run_id))
    write_records(ledger_path(root, run_id), records[:7])

    report = verify_run(root, run_id)
    assert problem_types(report) == {"ledger_truncated"}
    problem = the_problem(report, "ledger_truncated")
    assert problem.seq == 10 and problem.details["ledger_head_seq"] == 7
    assert report.head_seq == 7 and report.checkpoint_head is not None and report.checkpoint_head.seq == 10


def test_garbage_in_the_middle_is_reported_with_its_line(demo: tuple[Path, str]) -> None:
    root, run_id = demo
    lines = ledger_path(root, run_id).read_bytes().splitlines(keepends=True)
    lines[4] = b"\x00\x00 this is not json {\n"
    ledger_path(root, run_id).write_bytes(b"".join(lines))

    report = verify_run(root, run_id)  # no exception: a report
    assert problem_types(report) == {"invalid_json"}
    assert the_problem(report, "invalid_json").line == 5
    assert report.count == 9 and report.head_seq == 10


def test_duplicate_keys_are_refused(demo: tuple[Path, str]) -> None:
    # Two "result" keys: parsers that keep the first and parsers that keep the last would disagree.
    root, run_id = demo
    lines = ledger_path(root, run_id).read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"result":', b'"result":{"content":"shadow"},"result":', 1)
    ledger_path(root, run_id).write_bytes(b"".join(lines))

    report = verify_run(root, run_id)
    assert problem_types(report) == {"invalid_json"}
    assert "duplicate" in the_problem(report, "invalid_json").message


def test_another_runs_records_appended(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _, runtime = open_demo(root)
    run_demo(runtime, "victim")
    run_demo(runtime, "other")
    with ledger_path(root, "victim").open("ab") as handle:
        handle.write(ledger_path(root, "other").read_bytes())

    report = verify_run(root, "victim")
    assert {"wrong_run", "seq_mismatch", "prev_hash_mismatch"} <= problem_types(report)
    assert min(p.line for p in report.problems if p.type == "wrong_run") == 11
    assert "'other'" in the_problem(report, "wrong_run").message


def test_another_runs_ledger_swapped_in(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _, runtime = open_demo(root)
    run_demo(runtime, "victim")
    run_demo(runtime, "other")
    shutil.copyfile(ledger_path(root, "other"), ledger_path(root, "victim"))

    report = verify_run(root, "victim")
    assert problem_types(report) == {"wrong_run", "checkpoint_head_mismatch"}
    # Format 3 names the run on its first record; every later one is chained to it.
    assert [p.line for p in report.problems if p.type == "wrong_run"] == [1]


def test_deleted_checkpoint_is_a_note_the_ledger_rebuilds_it(demo: tuple[Path, str]) -> None:
    # run.json is a cache of a format-2 ledger: removing it loses nothing and proves nothing.
    root, run_id = demo
    before = open_demo(root)[1].get_state(run_id).to_dict()
    checkpoint_path(root, run_id).unlink()
    report = verify_run(root, run_id)
    assert report.ok and "checkpoint_missing" in {n.type for n in report.notes}
    assert open_demo(root)[1].get_state(run_id).to_dict() | {"updated_at": None} == before | {"updated_at": None}


def test_corrupt_checkpoint_is_a_note_the_ledger_rebuilds_it(demo: tuple[Path, str]) -> None:
    root, run_id = demo
    checkpoint_path(root, run_id).write_bytes(b'{"format": 1, "run": ')
    report = verify_run(root, run_id)
    assert report.ok
    note = next(n for n in report.notes if n.type == "checkpoint_corrupt")
    assert "run.json" in note.message and "rebuilt" in note.message


# -- rollback of run.json -------------------------------------------------------------------------

def test_checkpoint_rolled_back_after_an_effect_changes_nothing(tmp_path: Path) -> None:
    # The ledger is the write-ahead log: an older run.json is a stale cache, replayed forward.
    root = tmp_path / "store"
    _, runtime = open_demo(root)
    waiting = start_waiting(runtime, "victim")
    old = checkpoint_path(root, "victim").read_bytes()  # run.json at seq 6, waiting for the answer
    final = finish(runtime, waiting)
    head = verify_run(root, "victim").head_hash
    checkpoint_path(root, "victim").write_bytes(old)

    report = verify_run(root, "victim", expect_head=head)
    assert report.ok and "uncommitted_tail" in {n.type for n in report.notes}
    replayed = {k: v for k, v in runtime.get_state("victim").to_dict().items() if k != "updated_at"}
    assert replayed == {k: v for k, v in final.to_dict().items() if k != "updated_at"}
    with pytest.raises(RunNotWaitingError):  # the answered wait is not answered again
        runtime.resume(workflow=DEMO, run_id="victim", wait_key=waiting.waiting.wait_key, payload={"answer": "x"})
    assert verify_run(root, "victim", expect_head=head).head_hash == head  # nothing was written


def test_checkpoint_rolled_back_without_later_effects_needs_a_bookmark(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store, runtime = open_demo(root)
    runtime.start(workflow=ASK_ONLY, run_id="victim")
    waiting = runtime.tick(workflow=ASK_ONLY, run_id="victim")
    old = checkpoint_path(root, "victim").read_bytes()  # waiting for the answer
    runtime.resume(workflow=ASK_ONLY, run_id="victim", wait_key=waiting.waiting.wait_key, payload={"answer": "y"})
    current = checkpoint_path(root, "victim").read_bytes()

    checkpoint_path(root, "victim").write_bytes(old)
    plain = verify_run(root, "victim")
    # Only a resume and a completion follow the old copy: indistinguishable from a crash before
    # the last checkpoint, so the plain check passes (and says so in a note).
    assert plain.ok
    assert "uncommitted_tail" in {n.type for n in plain.notes}

    # A bookmark added while run.json was current remembers its seq: checkpoints never move back.
    checkpoint_path(root, "victim").write_bytes(current)
    store.bookmarks.add("victim", "audited")
    checkpoint_path(root, "victim").write_bytes(old)

    report = verify_run(root, "victim")
    assert problem_types(report) == {"checkpoint_rollback"}
    assert the_problem(report, "checkpoint_rollback").details["bookmark"] == "audited"


# -- what only the extra layers see ------------------------------------------------------------------

def test_truncation_with_a_rewritten_checkpoint_passes_the_plain_check(demo: tuple[Path, str]) -> None:
    root, run_id = demo
    records = read_records(ledger_path(root, run_id))[:7]
    write_records(ledger_path(root, run_id), records)
    point_checkpoint_at(root, run_id, records)
    assert verify_run(root, run_id).ok  # the limit of a bare chain: hence the layers below


def test_truncation_with_rewritten_checkpoint_vs_expect_head(demo: tuple[Path, str]) -> None:
    root, run_id = demo
    published = verify_run(root, run_id).head_hash
    records = read_records(ledger_path(root, run_id))[:7]
    write_records(ledger_path(root, run_id), records)
    point_checkpoint_at(root, run_id, records)

    report = verify_run(root, run_id, expect_head=published)
    assert problem_types(report) == {"expected_head_missing"}
    assert published in the_problem(report, "expected_head_missing").message


def test_truncation_with_rewritten_checkpoint_vs_bookmark(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store, runtime = open_demo(root)
    run_demo(runtime, "victim")
    store.bookmarks.add("victim", "final", note="what the auditor saw")
    records = read_records(ledger_path(root, "victim"))[:7]
    write_records(ledger_path(root, "victim"), records)
    point_checkpoint_at(root, "victim", records)

    report = verify_run(root, "victim")
    # The bookmark's record is gone, and the bookmark saw a newer checkpoint than run.json shows.
    assert problem_types(report) == {"bookmark_missing_record", "checkpoint_rollback"}
    assert the_problem(report, "bookmark_missing_record").seq == 10


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, str, Ed25519Signer]:
    root = tmp_path / "store"
    signer = Ed25519Signer.generate()
    _, runtime = open_demo(root, signer=signer)
    run_demo(runtime, "victim")
    report = verify_run(root, "victim", public_key=signer.public_key)
    assert report.ok and report.signature == "valid"
    return root, "victim", signer


def test_truncation_with_rewritten_checkpoint_vs_signature(signed: tuple[Path, str, Ed25519Signer]) -> None:
    # Every batch ends with a signed record: a ledger cut inside a batch ends unsigned.
    root, run_id, signer = signed
    records = read_records(ledger_path(root, run_id))[:7]
    write_records(ledger_path(root, run_id), records)
    point_checkpoint_at(root, run_id, records)

    for key in (None, signer.public_key_pem()):
        report = verify_run(root, run_id, public_key=key)
        assert problem_types(report) == {"unsigned_tail"}
        assert the_problem(report, "unsigned_tail").seq == 7


def test_signatures_removed_by_the_forger(signed: tuple[Path, str, Ed25519Signer]) -> None:
    # The first record (hashed, chained) says the run is signed: stripping every signature shows.
    root, run_id, signer = signed
    records = read_records(ledger_path(root, run_id))[:7]
    for record in records:
        record["signature"] = None
    write_records(ledger_path(root, run_id), records)
    point_checkpoint_at(root, run_id, records)
    doc = read_checkpoint_doc(root, run_id)
    doc["signature"] = None
    write_checkpoint_doc(root, run_id, doc)

    assert problem_types(verify_run(root, run_id)) == {"signature_missing"}
    assert problem_types(verify_run(root, run_id, public_key=signer.public_key)) == {"signature_missing"}


def test_signatures_stripped_from_the_ledger_alone(signed: tuple[Path, str, Ed25519Signer]) -> None:
    # run.json keeps its copy of the last signature: a copy is for display, never evidence.
    root, run_id, signer = signed
    records = read_records(ledger_path(root, run_id))
    for record in records:
        record.pop("signature", None)
    write_records(ledger_path(root, run_id), records)
    assert read_checkpoint_doc(root, run_id)["signature"] is not None

    for key in (None, signer.public_key):
        report = verify_run(root, run_id, public_key=key)
        assert problem_types(report) == {"signature_missing"} and report.signature != "valid"


def test_signatures_stripped_and_the_declaration_rechained_away(signed: tuple[Path, str, Ed25519Signer]) -> None:
    # Without its declaration the run looks begun without a key: only the key (or a published
    # head) tells. With the key, an unsigned head fails.
    root, run_id, signer = signed
    records = read_records(ledger_path(root, run_id))
    for record in records:
        record.pop("signature", None)
    records[0]["result"].pop("signing")
    forged = rechain(records)
    write_records(ledger_path(root, run_id), forged)
    point_checkpoint_at(root, run_id, forged)
    doc = read_checkpoint_doc(root, run_id)
    doc["signature"] = None
    write_checkpoint_doc(root, run_id, doc)

    assert verify_run(root, run_id).ok
    report = verify_run(root, run_id, public_key=signer.public_key)
    assert problem_types(report) == {"signature_missing"} and report.signature != "valid"


def test_signature_by_the_forgers_own_key(signed: tuple[Path, str, Ed25519Signer]) -> None:
    root, run_id, signer = signed
    forger = Ed25519Signer.generate()
    records = read_records(ledger_path(root, run_id))[:7]
    write_records(ledger_path(root, run_id), records)
    point_checkpoint_at(root, run_id, records)
    records[-1]["signature"] = forger.sign_head(run_id=run_id, seq=7, head_hash=records[-1]["record_hash"])
    write_records(ledger_path(root, run_id), records)

    report = verify_run(root, run_id, public_key=signer.public_key)
    # Not the key in force (the run's first record names it): seen with or without the key.
    assert problem_types(report) == {"signature_invalid", "signature_not_in_force"}
    assert signer.key_id in the_problem(report, "signature_invalid").message
    assert problem_types(verify_run(root, run_id)) == {"signature_not_in_force"}

    # Claiming the real key's id does not help: the signature does not verify with it.
    records[-1]["signature"]["key_id"] = signer.key_id
    write_records(ledger_path(root, run_id), records)
    report = verify_run(root, run_id, public_key=signer.public_key)
    assert problem_types(report) == {"signature_invalid"}
    assert "does not match" in the_problem(report, "signature_invalid").message


def full_rewrite(root: Path, run_id: str) -> list[dict[str, Any]]:
    """Change the answer given at seq 7 and everything that follows, with fresh, consistent hashes."""
    records = read_records(ledger_path(root, run_id))
    records[6]["result"]["payload"] = {"answer": "no"}
    records[9]["delta"]["output"] = {"answer": {"answer": "no"}}
    forged = rechain(records)
    write_records(ledger_path(root, run_id), forged)
    point_checkpoint_at(root, run_id, forged)
    return forged


def test_full_rewrite_passes_the_plain_check(demo: tuple[Path, str]) -> None:
    root, run_id = demo
    full_rewrite(root, run_id)
    assert verify_run(root, run_id).ok


def test_full_rewrite_vs_expect_head(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _, runtime = open_demo(root)
    waiting = start_waiting(runtime, "victim")
    published_while_waiting = verify_run(root, "victim").head_hash  # seq 6
    finish(runtime, waiting)
    published_final = verify_run(root, "victim").head_hash  # seq 10
    full_rewrite(root, "victim")

    assert problem_types(verify_run(root, "victim", expect_head=published_final)) == {"expected_head_missing"}
    # History before the forged answer is untouched, so a head published then is still found.
    earlier = verify_run(root, "victim", expect_head=published_while_waiting)
    assert earlier.ok and earlier.expect_head_seq == 6


def test_full_rewrite_vs_bookmarks(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store, runtime = open_demo(root)
    waiting = start_waiting(runtime, "victim")
    store.bookmarks.add("victim", "asked")
    finish(runtime, waiting)
    store.bookmarks.add("victim", "answered")
    full_rewrite(root, "victim")

    report = verify_run(root, "victim")
    assert problem_types(report) == {"bookmark_mismatch"}
    assert [(p.details["bookmark"], p.seq) for p in report.problems] == [("answered", 10)]
    assert report.bookmarks_checked == 2


def test_full_rewrite_vs_signature(signed: tuple[Path, str, Ed25519Signer]) -> None:
    root, run_id, signer = signed
    full_rewrite(root, run_id)
    # The rewritten records keep signatures that name their old hashes: caught with or without the key.
    for key in (None, signer.public_key):
        report = verify_run(root, run_id, public_key=key)
        assert "signature_malformed" in problem_types(report) and not report.ok


def test_rewritten_bookmark_file_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store, runtime = open_demo(root)
    run_demo(runtime, "victim")
    store.bookmarks.add("victim", "final")
    (root / "runs" / "victim" / "bookmarks.json").write_text('{"format": 1, "bookmarks": [')
    report = verify_run(root, "victim")
    assert problem_types(report) == {"bookmarks_corrupt"}
