"""Archives of a folder store: what they hold, offline verification, and every way to edit one."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from abstractruntime.core.canonical import canonical_json, sha256_hex
from abstractruntime.core.errors import NotFoundError, RunExistsError, VerificationFailedError
from abstractruntime.storage.archive import ARCHIVE_REPORT, export_archive, import_archive, verify_archive
from abstractruntime.storage.prune import parse_age
from abstractruntime.storage.snapshots import Snapshot
from abstractruntime.storage.store import FileStore
from tests.retention_support import fill, heads, later

ALL = ["cancelled-1", "done-1", "done-2", "done-3", "failed-1", "waiting-1"]


@pytest.fixture
def source(tmp_path: Path) -> Iterator[FileStore]:
    s = FileStore(tmp_path / "source", durability="none")
    fill(s)
    s.snapshots.save(Snapshot.from_run(run=s.runs.load("done-1"), name="after"))
    s.artifacts.store_text("attached", run_id="done-2")
    s.artifacts.store_text("of no run")
    s.bookmarks.add("done-3", "audited")
    yield s
    s.close()


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]


def _rewrite(path: Path, change: Callable[[dict[str, bytes]], dict[str, bytes]], *,
             extra: Callable[[tarfile.TarFile], None] = lambda tar: None) -> None:
    members = change(_members(path))
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        extra(tar)


def _with_manifest(members: dict[str, bytes], **changes: Any) -> dict[str, bytes]:
    manifest = json.loads(members["manifest.json"])
    manifest.update(changes)
    return {**members, "manifest.json": canonical_json(manifest) + b"\n"}


def _relisted(members: dict[str, bytes]) -> dict[str, bytes]:
    """The manifest rewritten to match the members' sizes and hashes (an attacker's move)."""
    files = {n: {"size": len(d), "sha256": sha256_hex(d)} for n, d in members.items() if n != "manifest.json"}
    return _with_manifest(members, files=files)


def test_export_holds_ledgers_byte_for_byte_and_verifies_offline(source: FileStore, tmp_path: Path) -> None:
    out = tmp_path / "all.tar.gz"
    report = export_archive(source, out)
    assert sorted(report.runs) == ALL and report.snapshots == 1 and report.artifacts == 1
    members = _members(out)
    assert list(members)[0] == "manifest.json"
    for run_id in ALL:
        assert members[f"runs/{run_id}/ledger.jsonl"] == (source.root / "runs" / run_id / "ledger.jsonl").read_bytes()
    manifest = json.loads(members["manifest.json"])
    assert {r: e["head_hash"] for r, e in manifest["runs"].items()} == heads(source, ALL)
    assert manifest["runs"]["done-1"]["status"] == "completed" and manifest["secrets"] is False
    assert not any(n.endswith("secrets.jsonl") or "index.sqlite3" in n or n.endswith(".lock") for n in members)
    # Artifacts the runs name go; one of no run stays out.
    assert [n for n in members if n.startswith("artifacts/") and n.endswith(".bin")] == \
        [f"artifacts/{source.artifacts.list_by_run('done-2')[0].artifact_id}.bin"]
    checked = verify_archive(out)
    assert checked.ok and sorted(r.run_id for r in checked.reports) == ALL
    assert all(str(out) in r.path for r in checked.reports)


def test_export_by_run_and_by_age(source: FileStore, tmp_path: Path) -> None:
    named = export_archive(source, tmp_path / "two.tar.gz", runs=["done-2", "waiting-1"])
    assert sorted(named.runs) == ["done-2", "waiting-1"]
    old = export_archive(source, tmp_path / "old.tar.gz", finished_before=parse_age("30d"), now=later)
    assert sorted(old.runs) == ["cancelled-1", "done-1", "done-2", "done-3", "failed-1"]
    with pytest.raises(NotFoundError):
        export_archive(source, tmp_path / "none.tar.gz", finished_before=parse_age("30d"))
    assert not (tmp_path / "none.tar.gz").exists()


def test_import_into_a_folder_gives_identical_heads_and_is_restartable(source: FileStore, tmp_path: Path) -> None:
    out = tmp_path / "all.tar.gz"
    export_archive(source, out)
    target = FileStore(tmp_path / "target", durability="none")
    try:
        report = import_archive(out, target)
        assert report.copied == ALL
        assert heads(target, ALL) == heads(source, ALL)
        for run_id in ALL:
            assert (target.root / "runs" / run_id / "ledger.jsonl").read_bytes() == \
                (source.root / "runs" / run_id / "ledger.jsonl").read_bytes()
        assert [s.name for s in target.snapshots.list(run_id="done-1", limit=None)] == ["after"]
        assert [b.name for b in target.bookmarks.list("done-3")] == ["audited"]
        assert target.artifacts.load_text(source.artifacts.list_by_run("done-2")[0].artifact_id) == "attached"
        again = import_archive(out, target)
        assert again.copied == [] and again.already == ALL
        # The waiting run goes on in its new store.
        from tests.retention_support import ask_workflow

        target.runtime().resume(workflow=ask_workflow(), run_id="waiting-1", payload={"answer": "later"})
        assert target.runs.load("waiting-1").status.value == "completed"
    finally:
        target.close()


def test_import_refuses_a_different_run_under_an_archived_id(source: FileStore, tmp_path: Path) -> None:
    out = tmp_path / "all.tar.gz"
    export_archive(source, out, runs=["done-1"])
    other = FileStore(tmp_path / "other", durability="none")
    try:
        from tests.retention_support import ask_workflow

        other.runtime().start(workflow=ask_workflow(), run_id="done-1")
        with pytest.raises(RunExistsError):
            import_archive(out, other)
    finally:
        other.close()


def test_secrets_only_when_asked(tmp_path: Path) -> None:
    from abstractruntime.core.models import Effect, EffectType, RunState, StepPlan
    from abstractruntime.core.spec import WorkflowSpec

    store = FileStore(tmp_path / "s", durability="none")

    def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", effect=Effect(EffectType.ASK_USER, {"prompt": "key?"}, result_key="k"), next_node="ask")

    wf = WorkflowSpec("secretive", "ask", {"ask": ask})
    rt = store.runtime()
    rt.start(workflow=wf, run_id="s1", vars={"api_key": "sk-very-secret-value"})
    rt.tick(workflow=wf, run_id="s1")
    kept = (store.root / "runs" / "s1" / "secrets.jsonl")
    if not kept.exists():
        pytest.skip("this run keeps no secret values")
    without = tmp_path / "without.tar.gz"
    export_archive(store, without)
    assert not any(n.endswith("secrets.jsonl") for n in _members(without))
    assert b"sk-very-secret-value" not in b"".join(_members(without).values())
    with_secrets = tmp_path / "with.tar.gz"
    assert export_archive(store, with_secrets, secrets=True).secrets
    assert _members(with_secrets)["runs/s1/secrets.jsonl"] == kept.read_bytes()
    assert verify_archive(with_secrets).ok and verify_archive(without).ok
    store.close()


def _edit_ledger(members: dict[str, bytes]) -> dict[str, bytes]:
    name = "runs/done-1/ledger.jsonl"
    return {**members, name: members[name].replace(b"yes done-1", b"no! done-1")}


EDITS: dict[str, tuple[Callable[[dict[str, bytes]], dict[str, bytes]], str]] = {
    "ledger edited": (_edit_ledger, "archive_file_mismatch"),
    "ledger edited, manifest relisted": (lambda m: _relisted(_edit_ledger(m)), "record_hash_mismatch"),
    "member removed": (lambda m: {k: v for k, v in m.items() if k != "runs/done-2/run.json"}, "archive_file_missing"),
    "run removed, manifest relisted": (lambda m: _relisted({k: v for k, v in m.items()
                                                            if not k.startswith("runs/done-2/")}),
                                       "archive_run_missing"),
    "member added": (lambda m: {**m, "runs/done-2/extra.txt": b"hi"}, "archive_file_unlisted"),
    "foreign member": (lambda m: {**m, "notes.txt": b"hi"}, "archive_file_unlisted"),
    "head moved": (lambda m: _with_manifest(m, runs={**json.loads(m["manifest.json"])["runs"],
                                                      "done-3": {"head_seq": 1, "head_hash": "0" * 64}}),
                   "archive_head_mismatch"),
    "no manifest": (lambda m: {k: v for k, v in m.items() if k != "manifest.json"}, "archive_manifest_missing"),
    "manifest not JSON": (lambda m: {**m, "manifest.json": b"{"}, "archive_manifest_invalid"),
    "newer format": (lambda m: _with_manifest(m, format=99), "unsupported_format"),
    "escaping name": (lambda m: {**m, "../evil": b"x"}, "archive_member_refused"),
    "absolute name": (lambda m: {**m, "/tmp/evil": b"x"}, "archive_member_refused"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edited_archive_fails_verify_and_is_not_imported(source: FileStore, tmp_path: Path, edit: str) -> None:
    out = tmp_path / "all.tar.gz"
    export_archive(source, out)
    change, problem = EDITS[edit]
    _rewrite(out, change)
    checked = verify_archive(out)
    assert not checked.ok
    found = [p.type for r in checked.reports for p in r.problems]
    assert problem in found, found
    target = FileStore(tmp_path / "target", durability="none")
    try:
        with pytest.raises(VerificationFailedError):
            import_archive(out, target)
        assert not (target.root / "runs").exists() or not list((target.root / "runs").iterdir())
    finally:
        target.close()
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()


def test_links_in_an_archive_are_refused_not_followed(source: FileStore, tmp_path: Path) -> None:
    out = tmp_path / "all.tar.gz"
    export_archive(source, out)

    def link(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("runs/done-1/evil")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)

    _rewrite(out, lambda m: m, extra=link)
    checked = verify_archive(out)
    report = {r.run_id: r for r in checked.reports}[ARCHIVE_REPORT]
    assert "archive_member_refused" in [p.type for p in report.problems]


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not gzip at all")
    checked = verify_archive(junk)
    assert not checked.ok and checked.reports[0].problems[0].type == "archive_unreadable"
    with pytest.raises(NotFoundError):
        verify_archive(tmp_path / "missing.tar.gz")


def test_signed_runs_verify_with_the_public_key(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from abstractruntime.storage.signing import Ed25519Signer

    signer, stranger = Ed25519Signer.generate(), Ed25519Signer.generate()
    store = FileStore(tmp_path / "signed", durability="none")
    store.runtime_defaults["signer"] = signer
    fill(store)
    out = tmp_path / "signed.tar.gz"
    export_archive(store, out)
    store.close()
    assert verify_archive(out, public_key=signer.public_key).ok
    wrong = verify_archive(out, public_key=stranger.public_key)
    assert not wrong.ok and any(p.type.startswith("signature") for r in wrong.reports for p in r.problems)


def test_a_store_that_pruned_a_run_does_not_take_it_back(source: FileStore, tmp_path: Path) -> None:
    from abstractruntime.storage.prune import prune_store
    from abstractruntime.storage.verify import verify_store

    out = tmp_path / "all.tar.gz"
    export_archive(source, out)
    pruned = prune_store(source, finished_before=parse_age("30d"), now=later, statuses=["cancelled"])
    assert [t["run_id"] for t in pruned.pruned] == ["cancelled-1"]
    with pytest.raises(RunExistsError) as info:
        import_archive(out, source)
    assert "cancelled-1" in str(info.value) and "pruned" in json.dumps(info.value.details["refused"])
    assert not (source.root / "runs" / "cancelled-1").exists()
    assert all(r.ok for r in verify_store(source))
    # Another store takes it.
    other = FileStore(tmp_path / "other", durability="none")
    try:
        assert "cancelled-1" in import_archive(out, other).copied
    finally:
        other.close()


def test_a_published_head_is_looked_for_in_the_archive(source: FileStore, tmp_path: Path) -> None:
    out = tmp_path / "all.tar.gz"
    export_archive(source, out)
    head = heads(source, ["done-2"])["done-2"]
    found = verify_archive(out, expect_head=head)
    assert found.ok and {r.run_id: r.expect_head_seq for r in found.reports}["done-2"] == 5
    missing = verify_archive(out, expect_head="0" * 64)
    assert not missing.ok


IMPORT_KILLED = """
import os, signal, sys
from abstractruntime.storage import archive
from abstractruntime.storage.postgres import transfer
from abstractruntime.storage.store import FileStore

done = []
original = transfer.write_folder_run


def write_then_die(copy, root, **kwargs):
    # The third run is laid out in its staging folder, not yet renamed into runs/: the process dies.
    path = original(copy, root, **kwargs)
    done.append(copy.run_id)
    if len(done) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return path


transfer.write_folder_run = write_then_die
archive.import_archive(sys.argv[1], FileStore(sys.argv[2]))
print("not killed")
"""

EXPORT_KILLED = """
import os, signal, sys
from abstractruntime.storage import archive
from abstractruntime.storage.store import FileStore


def die(data, target):
    os.kill(os.getpid(), signal.SIGKILL)


archive._durable_rename = die
archive.export_archive(FileStore(sys.argv[1]), sys.argv[2])
print("not killed")
"""


def test_killed_import_and_export(source: FileStore, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "all.tar.gz"
    export_archive(source, out)
    target = tmp_path / "target"
    child = subprocess.run([sys.executable, "-c", IMPORT_KILLED, str(out), str(target)], capture_output=True,
                           text=True, cwd=repo, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    from abstractruntime.storage.verify import verify_store

    present = sorted(p.name for p in (target / "runs").iterdir())
    assert present == ALL[:2]  # whole runs only: the third never reached runs/
    assert all(r.ok for r in verify_store(target))
    store = FileStore(target)
    try:
        again = import_archive(out, store)
        assert again.already == ALL[:2] and again.copied == ALL[2:]
        assert heads(store, ALL) == heads(source, ALL)
    finally:
        store.close()
    second = tmp_path / "second.tar.gz"
    child = subprocess.run([sys.executable, "-c", EXPORT_KILLED, str(source.root), str(second)],
                           capture_output=True, text=True, cwd=repo, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    assert not second.exists()  # no archive rather than a partial one


def test_a_swollen_member_is_refused_before_it_reaches_the_disk(source: FileStore, tmp_path: Path) -> None:
    """A gzip bomb: a listed member whose tar header says 64 MB of zeros (a few KB compressed)."""
    out = tmp_path / "all.tar.gz"
    export_archive(source, out)
    bomb = b"\0" * (64 << 20)
    _rewrite(out, lambda m: {**m, "runs/done-1/ledger.jsonl": bomb})
    assert out.stat().st_size < (1 << 20)
    from abstractruntime.storage.archive import opened_archive

    with opened_archive(out) as (checked, folder):
        written = max((p.stat().st_size for p in folder.rglob("*") if p.is_file()), default=0)
        assert written < (1 << 20), "the swollen member was written"
        assert not (folder / "runs/done-1/ledger.jsonl").exists()
    found = [p.type for r in checked.reports for p in r.problems]
    # Its header declares more than the manifest lists: refused before it is even decompressed.
    assert found == ["archive_too_large"], found
    assert not checked.ok


def test_an_archive_listing_more_than_the_limit_or_the_free_space_is_refused(source: FileStore,
                                                                            tmp_path: Path) -> None:
    out = tmp_path / "all.tar.gz"
    export_archive(source, out)
    assert verify_archive(out).ok
    capped = verify_archive(out, max_bytes=100)
    assert [p.type for r in capped.reports for p in r.problems] == ["archive_too_large"]
    target = FileStore(tmp_path / "target", durability="none")
    try:
        with pytest.raises(VerificationFailedError, match="archive_too_large"):
            import_archive(out, target, max_bytes=100)
    finally:
        target.close()

    def huge(members: dict[str, bytes]) -> dict[str, bytes]:
        manifest = json.loads(members["manifest.json"])
        manifest["files"]["runs/done-1/ledger.jsonl"]["size"] = 1 << 60  # more than any disk
        return {**members, "manifest.json": canonical_json(manifest) + b"\n"}

    _rewrite(out, huge)
    checked = verify_archive(out)
    assert [p.type for r in checked.reports for p in r.problems] == ["archive_too_large"]


@pytest.mark.parametrize("where", ["unlisted", "escaping name", "repeated", "before the manifest"])
def test_a_bomb_in_a_member_that_is_never_written_is_not_decompressed(source: FileStore, tmp_path: Path,
                                                                      where: str) -> None:
    """64 MB of zeros (a few KB compressed) in a member the unpacking skips: its header is enough to refuse it."""
    out = tmp_path / "all.tar.gz"
    export_archive(source, out)
    bomb = b"\0" * (64 << 20)
    if where == "before the manifest":
        _rewrite(out, lambda m: {"runs/done-1/junk": bomb, **m})
    else:
        name = {"unlisted": "runs/done-1/junk", "escaping name": "../junk", "repeated": "runs/done-1/run.json"}[where]
        _rewrite(out, lambda m: m, extra=lambda tar: tar.addfile(_info(name, len(bomb)), io.BytesIO(bomb)))
    assert out.stat().st_size < (1 << 20)
    found = [p.type for r in verify_archive(out).reports for p in r.problems]
    assert found[-1] in ("archive_too_large", "archive_manifest_missing"), found
    assert not verify_archive(out).ok


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def test_an_archive_must_start_with_its_manifest(source: FileStore, tmp_path: Path) -> None:
    out = tmp_path / "all.tar.gz"
    export_archive(source, out)

    def manifest_last(members: dict[str, bytes]) -> dict[str, bytes]:
        manifest = members.pop("manifest.json")
        return {**members, "manifest.json": manifest}

    _rewrite(out, manifest_last)
    from abstractruntime.storage.archive import opened_archive

    with opened_archive(out) as (checked, folder):
        assert not any(p.is_file() for p in folder.rglob("*")), "members were unpacked before the manifest"
    assert "archive_manifest_missing" in [p.type for r in checked.reports for p in r.problems]


def test_staging_folders_of_killed_copies_are_swept(source: FileStore, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "all.tar.gz"
    export_archive(source, out)
    target = FileStore(tmp_path / "target", durability="none")
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    left = target.root / f".copy-{dead}-0123456789ab"  # a copy killed between its writes and its rename
    (left / "done-1").mkdir(parents=True)
    (left / "done-1" / "ledger.jsonl").write_bytes(b"half a run\n")
    live = target.root / f".copy-{os.getpid()}-ba9876543210"  # another copy, still running
    live.mkdir()
    try:
        import_archive(out, target)
        assert not left.exists() and live.is_dir()
        assert sorted(p.name for p in (target.root / "runs").iterdir()) == ALL
    finally:
        target.close()
