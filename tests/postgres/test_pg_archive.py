"""Archives between store kinds: folder → archive → PostgreSQL → archive → folder, heads identical."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from abstractruntime.core.errors import VerificationFailedError
from abstractruntime.storage.archive import export_archive, import_archive, verify_archive
from abstractruntime.storage.postgres import verify as pg_verify
from abstractruntime.storage.postgres.copy import run_ids
from abstractruntime.storage.snapshots import Snapshot
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_store
from tests.retention_support import ask_workflow, fill, heads

ALL = ["cancelled-1", "done-1", "done-2", "done-3", "failed-1", "waiting-1"]
CLI = str(Path(sys.executable).parent / "abstractruntime")


def test_folder_to_postgres_and_back_through_archives(open_pg: Callable[..., Any], tmp_path: Path) -> None:
    folder = FileStore(tmp_path / "a", durability="none")
    back = FileStore(tmp_path / "b", durability="none")
    pg = open_pg()
    try:
        fill(folder)
        folder.snapshots.save(Snapshot.from_run(run=folder.runs.load("done-1"), name="after"))
        folder.artifacts.store_text("attached", run_id="done-2")
        folder.bookmarks.add("done-3", "audited")
        original = heads(folder, ALL)
        export_archive(folder, tmp_path / "one.tar.gz")
        assert import_archive(tmp_path / "one.tar.gz", pg).copied == ALL
        assert run_ids(pg) == ALL and heads(pg, ALL) == original
        assert all(r.ok for r in pg_verify.verify_store(pg))
        assert [s.name for s in pg.snapshots.list(run_id="done-1", limit=None)] == ["after"]
        assert [b.name for b in pg.bookmarks.list("done-3")] == ["audited"]
        # The waiting run goes on in PostgreSQL, then everything comes back to a folder.
        pg.runtime().resume(workflow=ask_workflow(), run_id="waiting-1", payload={"answer": "in pg"})
        export_archive(pg, tmp_path / "two.tar.gz")
        assert verify_archive(tmp_path / "two.tar.gz").ok
        assert import_archive(tmp_path / "two.tar.gz", back).copied == ALL
        assert {r: h for r, h in heads(back, ALL).items() if r != "waiting-1"} == \
            {r: h for r, h in original.items() if r != "waiting-1"}
        assert heads(back, ["waiting-1"]) == heads(pg, ["waiting-1"])
        for run_id in ALL:
            assert (back.root / "runs" / run_id / "ledger.jsonl").read_bytes().startswith(
                (folder.root / "runs" / run_id / "ledger.jsonl").read_bytes())
        assert all(r.ok for r in verify_store(back))
        assert back.runs.load("waiting-1").status.value == "completed"
    finally:
        folder.close()
        back.close()


def test_an_edited_archive_is_not_imported_into_postgres(open_pg: Callable[..., Any], tmp_path: Path) -> None:
    import io
    import tarfile

    folder = FileStore(tmp_path / "a", durability="none")
    fill(folder)
    out = tmp_path / "one.tar.gz"
    export_archive(folder, out)
    folder.close()
    with tarfile.open(out, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]
    members["runs/done-2/ledger.jsonl"] = members["runs/done-2/ledger.jsonl"].replace(b"yes", b"YES")
    with tarfile.open(out, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pg = open_pg()
    with pytest.raises(VerificationFailedError):
        import_archive(out, pg)
    assert run_ids(pg) == []


def test_cli_export_verify_import(database_url: str, tmp_path: Path) -> None:
    folder = FileStore(tmp_path / "a", durability="none")
    fill(folder)
    original = heads(folder, ALL)
    folder.close()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)

    out = tmp_path / "runs.tar.gz"
    exported = run("--store", str(tmp_path / "a"), "store", "export", "done-1", "done-2", "-o", str(out), "--json")
    assert exported.returncode == 0, exported.stderr
    assert sorted(json.loads(exported.stdout)["runs"]) == ["done-1", "done-2"]
    checked = run("verify", "--archive", str(out))
    assert checked.returncode == 0 and checked.stdout.count("\tdone-") == 2, checked.stdout + checked.stderr
    imported = run("--store", database_url, "store", "import", str(out))
    assert imported.returncode == 0 and imported.stdout.split() == ["done-1", "done-2"], imported.stderr
    listed = run("--store", database_url, "verify", "--all", "--json")
    assert listed.returncode == 0
    assert {d["run_id"]: d["head_hash"] for d in json.loads(listed.stdout)} == \
        {r: original[r] for r in ("done-1", "done-2")}
    pruned = run("--store", database_url, "prune", "--finished-before", "0s", "--json")
    assert pruned.returncode == 0 and json.loads(pruned.stdout)["count"] == 2, pruned.stderr
    after = run("--store", database_url, "verify", "--all")
    assert after.returncode == 0 and [line.split("\t")[0] for line in after.stdout.splitlines()] == ["pruned"] * 2
    refused = run("--store", database_url, "store", "import", str(out))
    assert refused.returncode == 1 and "pruned" in refused.stderr
