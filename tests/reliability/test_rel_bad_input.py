"""Battery 5: bad input at the library and CLI level — a clear error, and nothing written is lost.

Each case starts from a store holding one waiting run, captures every byte of the store's
run files, feeds the bad input, and checks the error class and that the bytes are unchanged
(or, for a torn append, that the old bytes are an untouched prefix).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from abstractruntime.core.canonical import MAX_RECORD_BYTES
from abstractruntime.core.errors import (
    CorruptRecordError,
    InvalidIdError,
    InvalidInputError,
    PayloadTooLargeError,
    RunNotFoundError,
    StorageError,
)
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

from .killloop import IMPORT_BASE

WF = WorkflowSpec("bad", "w", {
    "w": lambda run, ctx: StepPlan("w", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "evt:k"}, result_key="e"),
                                   next_node="done"),
    "done": lambda run, ctx: StepPlan("done", complete_output={"e": run.vars.get("e")}),
})


def _fingerprint(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != ".lock" and not p.name.startswith("index.sqlite3")}


@pytest.fixture
def waiting(tmp_path: Path) -> Iterator[tuple[FileStore, Any]]:
    store = FileStore(tmp_path / "store", durability="none")
    rt = store.runtime()
    rt.start(workflow=WF, run_id="w1")
    rt.tick(workflow=WF, run_id="w1")
    yield store, rt
    store.close()


def _unchanged(store: FileStore, action: Callable[[], Any], error: type[BaseException]) -> BaseException:
    before = _fingerprint(store.root)
    with pytest.raises(error) as info:
        action()
    assert _fingerprint(store.root) == before
    assert str(info.value)  # a message, one line
    assert "\n" not in str(info.value)
    return info.value


def _ledger(store: FileStore) -> Path:
    return store.root / "runs" / "w1" / "ledger.jsonl"


def _checkpoint(store: FileStore) -> Path:
    return store.root / "runs" / "w1" / "run.json"


def _insert_line(path: Path, index: int, line: bytes) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(index, line + b"\n")
    path.write_bytes(b"".join(lines))


# -- malformed records ----------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    b"{not json", b'{"format": 1, "seq": NaN}', b'{"format": 1, "seq": Infinity}',
    b'{"format": 1, "format": 1}', b"\xff\xfe{}", b"[1, 2]", b'"text"',
    b"[" * 10000 + b"]" * 10000,
], ids=["malformed", "nan", "infinity", "duplicate-key", "invalid-utf8", "array", "string", "deep-10000"])
def test_a_bad_ledger_line_mid_file_is_a_corrupt_record_naming_the_line(waiting: Any, line: bytes) -> None:
    store, _ = waiting
    _insert_line(_ledger(store), 1, line)
    rt = FileStore(store.root, durability="none").runtime()  # a process that did not write it
    err = _unchanged(store, lambda: rt.resume(workflow=WF, run_id="w1", wait_key="evt:k", payload={}),
                     CorruptRecordError)
    assert "ledger.jsonl" in str(err) and ":2" in str(err)
    _unchanged(store, lambda: rt.get_ledger("w1"), CorruptRecordError)
    assert not verify_run(store.root, "w1").ok


@pytest.mark.parametrize("content", [
    b"{not json", b'{"format": 1, "x": NaN}', b'{"format": 1, "format": 2}', b"\xff\xfe",
    b"[" * 10000 + b"]" * 10000, b"",
], ids=["malformed", "nan", "duplicate-key", "invalid-utf8", "deep-10000", "empty"])
def test_a_damaged_checkpoint_is_rebuilt_from_the_ledger(waiting: Any, content: bytes,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    # run.json is a cache written without fsync (a power loss may tear it): the ledger rebuilds it.
    store, rt = waiting
    before = rt.get_state("w1").to_dict()
    _checkpoint(store).write_bytes(content)
    fresh = FileStore(store.root, durability="none").runtime()
    assert fresh.get_state("w1").to_dict() | {"updated_at": None} == before | {"updated_at": None}
    assert "run.json" in caplog.text and "rebuilding" in caplog.text
    done = fresh.resume(workflow=WF, run_id="w1", wait_key="evt:k", payload={"ok": 1})
    assert done.status.value == "completed"
    assert json.loads(_checkpoint(store).read_bytes())["state"]["run"]["status"] == "completed"
    assert verify_run(store.root, "w1").ok


def test_a_checkpoint_from_a_newer_version_is_refused(waiting: Any) -> None:
    store, rt = waiting
    _checkpoint(store).write_bytes(b'{"format": 99}')
    from abstractruntime.core.errors import UnsupportedFormatError
    err = _unchanged(store, lambda: rt.get_state("w1"), UnsupportedFormatError)
    assert "run.json" in str(err)
    _unchanged(store, lambda: rt.resume(workflow=WF, run_id="w1", wait_key="evt:k", payload={}),
               UnsupportedFormatError)


def test_a_torn_tail_is_ignored_by_readers_and_truncated_by_the_next_writer(waiting: Any) -> None:
    store, rt = waiting
    good = _ledger(store).read_bytes()
    _ledger(store).write_bytes(good + b'{"format":1,"seq":')
    assert len(rt.get_ledger("w1")) == good.count(b"\n")
    rt.resume(workflow=WF, run_id="w1", wait_key="evt:k", payload={"ok": 1})
    after = _ledger(store).read_bytes()
    assert after.startswith(good) and b'"seq":}' not in after
    assert verify_run(store.root, "w1").ok


# -- bad values passed in -------------------------------------------------------------------

@pytest.mark.parametrize("payload", [float("nan"), float("inf"), {"x": [float("-inf")]}, {1j: 2}, object()],
                         ids=["nan", "inf", "nested-inf", "complex-key", "object"])
def test_a_non_json_resume_payload_is_refused_before_anything_is_written(waiting: Any, payload: Any) -> None:
    store, rt = waiting
    _unchanged(store, lambda: rt.resume(workflow=WF, run_id="w1", wait_key="evt:k", payload=payload),
               InvalidInputError)


def test_a_10000_deep_payload_is_refused(waiting: Any) -> None:
    store, rt = waiting
    deep: Any = []
    for _ in range(10000):
        deep = [deep]
    _unchanged(store, lambda: rt.resume(workflow=WF, run_id="w1", wait_key="evt:k", payload=deep),
               InvalidInputError)
    _unchanged(store, lambda: rt.start(workflow=WF, vars={"d": deep}, run_id="w2"), InvalidInputError)


def test_oversized_payloads_raise_payload_too_large_and_write_nothing(waiting: Any) -> None:
    store, rt = waiting
    big = "x" * (MAX_RECORD_BYTES + 1)
    err = _unchanged(store, lambda: rt.resume(workflow=WF, run_id="w1", wait_key="evt:k", payload={"b": big}),
                     PayloadTooLargeError)
    assert "8,388,608" in str(err)
    _unchanged(store, lambda: rt.start(workflow=WF, vars={"b": big}, run_id="w2"), PayloadTooLargeError)
    # Just under the limit is accepted.
    rt.resume(workflow=WF, run_id="w1", wait_key="evt:k", payload={"b": "y" * (MAX_RECORD_BYTES // 2)})
    assert rt.get_state("w1").status.value == "completed"


def test_an_oversized_node_output_fails_the_run_on_the_record(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s", durability="none")
    rt = store.runtime()
    wf = WorkflowSpec("big", "a", {"a": lambda run, ctx: StepPlan("a", complete_output={"b": "x" * MAX_RECORD_BYTES})})
    rt.start(workflow=wf, run_id="b1")
    state = rt.tick(workflow=wf, run_id="b1")
    assert state.status.value == "failed" and "limit" in (state.error or "")
    assert verify_run(store.root, "b1").ok
    store.close()


# -- ids and paths --------------------------------------------------------------------------

@pytest.mark.parametrize("run_id", ["..", "../x", "a/b", "/etc/passwd", "", "a\x00b", ".hidden", "x" * 129, "a..b"])
def test_unsafe_run_ids_are_refused_everywhere_and_create_nothing(waiting: Any, run_id: str) -> None:
    store, rt = waiting
    for action in (lambda: rt.start(workflow=WF, run_id=run_id), lambda: rt.get_state(run_id),
                   lambda: rt.tick(workflow=WF, run_id=run_id), lambda: rt.cancel_run(run_id),
                   lambda: verify_run(store.root, run_id), lambda: store.bookmarks.add(run_id, "b")):
        _unchanged(store, action, InvalidIdError)
    assert sorted(p.name for p in (store.root / "runs").iterdir()) == ["w1"]


def test_a_symlinked_run_directory_is_refused(waiting: Any, tmp_path: Path) -> None:
    store, rt = waiting
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(store.root / "runs" / "w1", elsewhere)
    os.symlink(elsewhere, store.root / "runs" / "w2")
    other = FileStore(store.root, durability="none")  # a fresh process's view
    for action in (lambda: other.runtime().get_state("w2"),
                   lambda: other.runtime().resume(workflow=WF, run_id="w2", wait_key="evt:k", payload={})):
        _unchanged(store, action, StorageError)
    assert _fingerprint(elsewhere) == _fingerprint(store.root / "runs" / "w1")
    other.close()


def test_a_symlinked_ledger_is_refused_by_writers_and_readers(waiting: Any, tmp_path: Path) -> None:
    store, _ = waiting
    target = tmp_path / "real-ledger.jsonl"
    shutil.move(_ledger(store), target)
    os.symlink(target, _ledger(store))
    before = target.read_bytes()
    other = FileStore(store.root, durability="none")
    rt = other.runtime()
    with pytest.raises(StorageError):
        rt.resume(workflow=WF, run_id="w1", wait_key="evt:k", payload={})
    with pytest.raises(StorageError):
        rt.get_ledger("w1")
    assert target.read_bytes() == before
    assert not verify_run(store.root, "w1").ok
    other.close()


# -- unreadable files and a full disk: in a subprocess --------------------------------------

_CHILD = textwrap.dedent("""
    import json, os, resource, signal, sys
    from abstractruntime.core.errors import AbstractRuntimeError
    from abstractruntime.storage.store import FileStore
    from {pkg}.test_rel_bad_input import WF
    mode, root = sys.argv[1], sys.argv[2]
    if mode == "nobody":
        # Load every module the store needs first: the source tree may not be readable by nobody.
        import abstractruntime.core.runtime, abstractruntime.storage.artifacts  # noqa: E401,F401
        os.setgid(65534); os.setuid(65534)
    if mode.startswith("fsize"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past the limit fail with EFBIG
        limit = int(sys.argv[3])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    store = FileStore(root, durability="fsync")
    rt = store.runtime()
    try:
        if mode == "fsize-start":
            rt.start(workflow=WF, run_id="w2", vars={{"pad": "p" * 5000}})
        elif mode == "fsize-resume":
            rt.resume(workflow=WF, run_id="w1", wait_key="evt:k", payload={{"pad": "p" * 5000}})
        else:
            rt.get_state("w1")
        print(json.dumps({{"ok": True}}))
    except AbstractRuntimeError as exc:
        print(json.dumps({{"error": type(exc).__name__, "message": str(exc)}}))
""")


def _child(mode: str, root: Path, *extra: str) -> dict[str, Any]:
    pkg = __package__ or "tests.reliability"
    proc = subprocess.run([sys.executable, "-c", _CHILD.format(pkg=pkg), mode, str(root), *extra],
                          cwd=IMPORT_BASE, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "setuid"), reason="POSIX only")
def test_an_unreadable_checkpoint_is_a_storage_error(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to uid 65534 (a non-root user can test chmod 000 directly)")
    # A world-traversable directory (pytest's tmp_path is 0700 root), store made world-readable.
    base = Path(tempfile.mkdtemp(prefix="rel-perm-"))
    try:
        base.chmod(0o755)
        store = FileStore(base / "store", durability="none")
        store.runtime().start(workflow=WF, run_id="w1")
        store.close()
        for path in [base / "store", *(base / "store").rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)
        (base / "store" / "runs" / "w1" / "run.json").chmod(0o000)
        before = _fingerprint(base / "store")
        result = _child("nobody", base / "store")
        assert result["error"] == "StorageError" and "Permission denied" in result["message"]
        assert "run.json" in result["message"]
        assert _fingerprint(base / "store") == before
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_full_disk_during_start_is_a_storage_error_and_loses_nothing(waiting: Any) -> None:
    store, _ = waiting
    before = _fingerprint(store.root)
    result = _child("fsize-start", store.root, "4000")
    assert result["error"] == "StorageError" and "File too large" in result["message"]
    after = _fingerprint(store.root)
    assert all(after[k] == v for k, v in before.items())
    assert verify_run(store.root, "w1").ok


def test_a_full_disk_during_resume_is_a_storage_error_and_loses_nothing(waiting: Any) -> None:
    store, rt = waiting
    ledger_before, ckpt_before = _ledger(store).read_bytes(), _checkpoint(store).read_bytes()
    result = _child("fsize-resume", store.root, str(len(ledger_before) + 100))
    assert result["error"] == "StorageError" and "File too large" in result["message"]
    # The append was cut short: the old bytes are an untouched prefix, the checkpoint is unchanged.
    assert _ledger(store).read_bytes().startswith(ledger_before)
    assert _checkpoint(store).read_bytes() == ckpt_before
    assert rt.get_state("w1").status.value == "waiting"
    # With room again, the same resume succeeds (the torn tail is truncated) and verifies.
    fresh = FileStore(store.root, durability="none")
    state = fresh.runtime().resume(workflow=WF, run_id="w1", wait_key="evt:k", payload={"again": True})
    assert state.status.value == "completed"
    assert verify_run(store.root, "w1").ok
    fresh.close()


def test_an_unknown_run_is_run_not_found(waiting: Any) -> None:
    store, rt = waiting
    _unchanged(store, lambda: rt.get_state("nope"), RunNotFoundError)
    _unchanged(store, lambda: rt.tick(workflow=WF, run_id="nope"), RunNotFoundError)


# -- the CLI's exit codes (docs/cli.md: 1 error, 2 bad input, 4 not found) ------------------

CLI = shutil.which("abstractruntime", path=os.path.dirname(sys.executable)) or shutil.which("abstractruntime")


def _cli_works() -> bool:
    if not CLI:
        return False
    return subprocess.run([CLI, "--help"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _cli_works(), reason="the abstractruntime CLI is not installed")
def test_cli_exit_codes_for_bad_input(tmp_path: Path) -> None:
    sample = IMPORT_BASE / "sample_runs" / "workflows" / "event.py"
    if not sample.exists():
        sample = Path(__file__).resolve().parents[2] / "sample_runs" / "workflows" / "event.py"
    store = tmp_path / "store"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, "--store", str(store), "--no-input", *args], capture_output=True, text=True,
                              timeout=60)

    started = cli("run", str(sample))
    assert started.returncode == 5, started.stderr
    handle = started.stdout.strip().splitlines()[-1]  # RUN_ID@wN: names the wait a resume answers
    run_id = handle.partition("@")[0]
    before = _fingerprint(store)
    cases = {
        ("runs", "show", "../x"): 2,
        ("runs", "show", "/etc"): 2,
        ("runs", "show", "nosuch"): 4,
        ("resume", handle, "--payload", "{bad"): 2,
        ("resume", handle, "--payload", "[NaN]"): 2,
        ("resume", handle, "--payload", '{"a": 1, "a": 2}'): 2,
        ("resume", handle, "--payload", "[" * 10000 + "]" * 10000): 2,
        ("resume", "nosuch", "--payload", "{}"): 4,
    }
    for args, code in cases.items():
        result = cli(*args)
        assert result.returncode == code, (args[:3], result.returncode, result.stderr[-300:])
        assert result.stderr.strip(), args[:3]
    assert _fingerprint(store) == before
    ledger = store / "runs" / run_id / "ledger.jsonl"
    _insert_line(ledger, 0, b"{not json")
    shown = cli("ledger", "show", run_id)
    assert shown.returncode == 1 and "ledger.jsonl:1" in shown.stderr
    assert cli("verify", run_id).returncode == 3
