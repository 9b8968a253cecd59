"""`store export`, `verify --archive` and `store import` at the command line."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

WORKFLOW = '''
from abstractruntime import StepPlan, WorkflowSpec

workflow = WorkflowSpec("quick", "only", {"only": lambda run, ctx: StepPlan("only", complete_output={"ok": True})})
'''


def _runs(cli, tmp_path: Path, *ids: str) -> None:
    wf = tmp_path / "quick.py"
    wf.write_text(WORKFLOW)
    for run_id in ids:
        assert cli("run", str(wf), "--run-id", run_id).exit_code == 0


def test_export_verify_import(cli, store: Path, tmp_path: Path) -> None:
    _runs(cli, tmp_path, "a", "b", "c")
    out = tmp_path / "old.tar.gz"
    exported = cli("store", "export", "--finished-before", "0s", "-o", str(out))
    assert exported.exit_code == 0 and exported.stdout.split() == ["a", "b", "c"], exported.stderr
    checked = cli("verify", "--archive", str(out), "--json")
    assert checked.exit_code == 0 and [d["run_id"] for d in json.loads(checked.stdout)] == ["a", "b", "c"]
    target = tmp_path / "target"
    imported = cli("--store", str(target), "store", "import", str(out), "--json")
    assert imported.exit_code == 0 and json.loads(imported.stdout)["copied"] == ["a", "b", "c"], imported.stderr
    for run_id in "abc":
        assert (target / "runs" / run_id / "ledger.jsonl").read_bytes() == \
            (store / "runs" / run_id / "ledger.jsonl").read_bytes()
    again = cli("--store", str(target), "store", "import", str(out))
    assert again.exit_code == 0 and again.stdout == "" and "3 already there" in again.stderr


def test_an_edited_archive_is_exit_3(cli, store: Path, tmp_path: Path) -> None:
    _runs(cli, tmp_path, "a")
    out = tmp_path / "one.tar.gz"
    assert cli("store", "export", "a", "-o", str(out)).exit_code == 0
    with tarfile.open(out, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]
    members["runs/a/run.json"] = members["runs/a/run.json"].replace(b'"completed"', b'"cancelled"')
    with tarfile.open(out, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    checked = cli("verify", "--archive", str(out))
    assert checked.exit_code == 3 and "FAILED\t(archive)" in checked.stdout and "archive_file_mismatch" in checked.stderr
    target = tmp_path / "target"
    refused = cli("--store", str(target), "store", "import", str(out))
    assert refused.exit_code == 3 and "does not verify" in refused.stderr
    assert not (target / "runs").exists() or not list((target / "runs").iterdir())


def test_bad_archive_options(cli, store: Path, tmp_path: Path) -> None:
    _runs(cli, tmp_path, "a")
    cases = [
        (["store", "export", "a", "--finished-before", "3d", "-o", "x.tar.gz"], 2),
        (["store", "export", "-o", str(tmp_path)], 2),
        (["store", "export", "nope", "-o", str(tmp_path / "x.tar.gz")], 4),
        (["verify", "a", "--archive", "x.tar.gz"], 2),
        (["verify", "--archive", str(tmp_path / "missing.tar.gz")], 4),
        (["store", "import", str(tmp_path / "missing.tar.gz")], 4),
    ]
    for args, code in cases:
        out = cli(*args)
        assert out.exit_code == code, (args, out.exit_code, out.stderr)
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "x.tar.gz").exists()
