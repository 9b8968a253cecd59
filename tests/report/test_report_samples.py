"""The committed sample reports: one per recorded run, linked, and in step with the store."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from report_support import REPO, SAMPLES, SAMPLE_STORE, sample_run_ids

REPORTS = SAMPLES / "reports"


def _data(run_id: str) -> dict:
    html = (REPORTS / f"{run_id}.html").read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)[1])


def test_every_sample_run_has_a_current_report() -> None:
    for run_id in sample_run_ids():
        data = _data(run_id)
        records = (SAMPLE_STORE / "runs" / run_id / "ledger.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(data["rows"]) == len(records), f"{run_id}: regenerate with sh sample_runs/record.sh --reports-only"
        head = json.loads(records[-1])["record_hash"]
        assert data["rows"][-1]["meta"]["hash"] == head
        assert data["verified"] is (run_id != "tampered")
    index = (REPORTS / "index.html").read_text(encoding="utf-8")
    assert all(f'href="{run_id}.html"' in index for run_id in sample_run_ids())


def test_reports_are_linked_from_the_readmes() -> None:
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    for run_id in sample_run_ids():
        assert f"(reports/{run_id}.html)" in readme
    assert "(reports/index.html)" in readme
    assert "report --all" in (SAMPLES / "record.sh").read_text(encoding="utf-8")
    assert "docs/report.md" in (REPO / "README.md").read_text(encoding="utf-8")
    shot = REPO / "docs" / "img" / "report.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size < 300_000
    assert "img/report.png" in (REPO / "docs" / "report.md").read_text(encoding="utf-8")


def test_the_benchmark_runs(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.report_bench", "--steps", "300", "--repeat", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["records"] >= 300 and result["write_report_s"] > 0
