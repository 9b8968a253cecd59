"""``abstractruntime report`` through the real command (subprocess) and typer's CliRunner."""

from __future__ import annotations

import json
import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Optional

import pytest
from typer.testing import CliRunner

from report_support import BIN, BREAKOUT, HOSTILE, sample_run_ids


def run_cli(store: Path, *args: str, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("ABSTRACTRUNTIME_STORE", None)
    return subprocess.run([str(BIN), "--store", str(store), *args], capture_output=True, text=True, env=env,
                          cwd=cwd or store.parent, timeout=120)


def invoke(store: Path, *args: str):
    from abstractruntime.cli.main import app

    return CliRunner().invoke(app, ["--store", str(store), *args], color=False)


class _Fetchers(HTMLParser):
    """Every element or attribute of a page that could make a browser fetch something."""

    URL_ATTRS = {"src", "href", "action", "formaction", "poster", "data", "xlink:href", "srcset", "background",
                 "ping", "manifest", "codebase"}
    FETCHING_TAGS = {"link", "iframe", "frame", "object", "embed", "base", "img", "image", "audio", "video",
                     "source", "track", "use", "feimage", "script"}

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.style = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.FETCHING_TAGS and not (tag == "script" and not any(k == "src" for k, _ in attrs)):
            self.found.append(f"<{tag}>")
        for key, value in attrs:
            if key in self.URL_ATTRS and value is not None and not value.startswith("#"):
                self.found.append(f"{tag} {key}={value}")
        self.style = tag == "style"

    def handle_data(self, data: str) -> None:
        if self.style and (re.search(r"url\((?!#)", data) or "@import" in data):
            self.found.append("css url()/@import")


def assert_self_contained(html: str, *, allow_relative_links: bool = False) -> None:
    """No element or attribute can fetch anything; the page's script is checked on its own (below)."""
    assert html.count("<script") == (2 if not allow_relative_links else 0)
    parser = _Fetchers()
    parser.feed(html)
    found = [f for f in parser.found
             if not (allow_relative_links and re.fullmatch(r"a href=[A-Za-z0-9._%-]+\.html", f))]
    assert not found, f"page refers to something outside itself: {found}"
    assert "Content-Security-Policy" in html and "default-src &#x27;none&#x27;" in html


def test_the_script_fetches_nothing_and_writes_no_markup() -> None:
    from abstractruntime.report.script import SCRIPT

    for word in ("fetch(", "XMLHttpRequest", "import(", "WebSocket", "sendBeacon", "EventSource", ".src",
                 "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function(", "href"):
        assert word not in SCRIPT, word


def test_report_one_sample_run(samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "approved.html"
    proc = run_cli(samples, "report", "approval-approved", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert 'id="verdict" class="verdict ok" data-ok="true"' in html
    assert 'id="f-status">completed<' in html and 'id="f-workflow">approval<' in html
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)[1])
    assert len(data["rows"]) == 6 and data["graph"]["path"] == ["ask", "decide", "deploy"]
    assert any(m["type"] == "bookmark" and m["name"] == "approved" for r in data["rows"] for m in r.get("marks", []))
    assert oct(out.stat().st_mode & 0o777) == "0o600"  # private by default (docs/report.md)


@pytest.mark.parametrize("run_id", sample_run_ids())
def test_every_sample_run_reports(samples: Path, tmp_path: Path, run_id: str) -> None:
    result = invoke(samples, "--json", "report", run_id, "-o", str(tmp_path / f"{run_id}.html"))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["run_id"] == run_id and doc["verified"] is (run_id != "tampered")
    assert doc["rows"] == len((samples / "runs" / run_id / "ledger.jsonl").read_text().splitlines())
    assert_self_contained(Path(doc["path"]).read_text(encoding="utf-8"))


def test_tampered_run_report_shows_the_failure_and_still_exits_0(samples: Path, tmp_path: Path) -> None:
    proc = run_cli(samples, "report", "tampered", "-o", str(tmp_path / "t.html"))
    assert proc.returncode == 0
    assert "FAILED verification" in proc.stderr
    html = (tmp_path / "t.html").read_text(encoding="utf-8")
    assert 'data-ok="false"' in html and "Verification FAILED" in html
    assert "record_hash_mismatch" in html and '<a href="#seq-4">seq 4</a>' in html


def test_default_output_path_and_stdout(samples: Path, tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    proc = run_cli(samples, "report", "tools-run", cwd=work)
    assert proc.returncode == 0 and (work / "tools-run.html").exists()
    proc = run_cli(samples, "report", "tools-run", "-o", "-", cwd=work)
    assert proc.returncode == 0 and proc.stdout.startswith("<!DOCTYPE html>") and proc.stdout.endswith("</html>\n")


def test_exit_codes(samples: Path, tmp_path: Path) -> None:
    assert run_cli(samples, "report", "no-such-run").returncode == 4
    assert run_cli(samples, "report", "approval-approved", "--at", "99").returncode == 2
    assert run_cli(samples, "report", "approval-approved", "--at", "0").returncode == 2
    assert run_cli(samples, "report", "approval-approved", "--all").returncode == 2
    assert run_cli(samples, "report").returncode == 2
    assert run_cli(samples, "report", "approval-approved", "--layout", "fancy").returncode == 2
    assert run_cli(samples, "report", "../etc").returncode == 2
    assert not list(tmp_path.glob("*.html"))


def test_at_cuts_the_timeline(samples: Path, tmp_path: Path) -> None:
    result = invoke(samples, "--json", "report", "approval-approved", "--at", "3", "-o", str(tmp_path / "a.html"))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["rows"] == 3 and doc["status"] == "waiting"
    html = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert 'id="f-at">3 of 6<' in html


def test_all_writes_an_index(samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    proc = run_cli(samples, "--json", "report", "--all", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["index"] == str(out / "index.html")
    assert sorted(r["run_id"] for r in doc["runs"]) == sample_run_ids()
    assert [r["run_id"] for r in doc["runs"] if not r["verified"]] == ["tampered"]
    index = (out / "index.html").read_text(encoding="utf-8")
    assert_self_contained(index, allow_relative_links=True)
    for run_id in sample_run_ids():
        assert f'<a href="{run_id}.html">{run_id}</a>' in index
        assert (out / f"{run_id}.html").exists()
    assert "1 FAILED verification" in index
    # the approval runs teach each other's graph: the rejected run shows deploy as not taken
    rejected = (out / "approval-rejected.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', rejected, re.S)[1])
    assert "deploy" in data["graph"]["nodes"] and "deploy" not in data["graph"]["visited"]


def test_hostile_text_is_escaped_in_the_file(hostile_store: Path, tmp_path: Path) -> None:
    for layout in ("auto", "simple"):
        out = tmp_path / f"h-{layout}.html"
        proc = run_cli(hostile_store, "report", "hostile", "-o", str(out), "--layout", layout)
        assert proc.returncode == 0, proc.stderr
        html = out.read_text(encoding="utf-8")
        assert_self_contained(html)
        assert HOSTILE not in html and BREAKOUT not in html
        assert "<script>window" not in html and "<img" not in html and "<b " not in html
        assert html.count("</script>") == 2


def test_graph_layout_fallback_without_dot(samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABSTRACTRUNTIME_DOT", "none")
    result = invoke(samples, "--json", "report", "agent-approved", "-o", str(tmp_path / "a.html"))
    assert json.loads(result.stdout)["graph_engine"] == "simple"
    html = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert '<svg class="graph fallback"' in html and html.count('class="edge taken"') == 4


def test_graph_laid_out_by_dot_when_installed(samples: Path, tmp_path: Path) -> None:
    import shutil

    if shutil.which("dot") is None:
        pytest.skip("Graphviz dot not installed")
    result = invoke(samples, "--json", "report", "approval-approved", "--layout", "dot", "-o", str(tmp_path / "a.html"))
    assert json.loads(result.stdout)["graph_engine"] == "dot"
    html = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    assert re.search(r'<g id="node_n0" class="node visited (current )?entry"', html)


def test_reading_never_writes_to_the_run(samples: Path, tmp_path: Path) -> None:
    before = {p: p.read_bytes() for p in (samples / "runs").rglob("*") if p.is_file() and p.name != ".lock"}
    assert run_cli(samples, "report", "--all", "-o", str(tmp_path / "site")).returncode == 0
    after = {p: p.read_bytes() for p in (samples / "runs").rglob("*") if p.is_file() and p.name != ".lock"}
    assert before == after


def test_corrupt_ledger_line_still_renders(samples: Path, tmp_path: Path) -> None:
    ledger = samples / "runs" / "approval-rejected" / "ledger.jsonl"
    lines = ledger.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = "{not json at all\n"
    ledger.write_text("".join(lines), encoding="utf-8")
    result = invoke(samples, "--json", "report", "approval-rejected", "-o", str(tmp_path / "c.html"))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verified"] is False and doc["rows"] == 6
    html = (tmp_path / "c.html").read_text(encoding="utf-8")
    assert "ledger partly unreadable" in html and "invalid_json" in html


def test_snapshot_and_bookmark_marks(samples: Path, tmp_path: Path) -> None:
    result = invoke(samples, "report", "approval-waiting", "-o", str(tmp_path / "w.html"))
    assert result.exit_code == 0, result.output
    html = (tmp_path / "w.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S)[1])
    marks = {r["seq"]: r.get("marks") for r in data["rows"]}
    (snapshot_file,) = (samples / "snapshots").glob("*.json")  # the one snapshot the recording took
    assert marks[3] == [{"type": "snapshot", "name": "before-answer", "id": snapshot_file.stem}]
    assert 'class="mark-snapshot"' in html and 'id="f-status">waiting<' in html
    assert '<details class="state-waiting" open>' in html and "Deploy payments to production? [y/n]" in html


def test_failed_run(tmp_path: Path) -> None:
    from abstractruntime import StepPlan, WorkflowSpec, open_store

    def a(run, ctx):
        return StepPlan("a", next_node="b")

    def b(run, ctx):
        raise RuntimeError("boom <b>")

    store = tmp_path / "store"
    fs = open_store(store)
    runtime = fs.runtime()
    workflow = WorkflowSpec("failing", entry_node="a", nodes={"a": a, "b": b})
    runtime.tick(workflow=workflow, run_id=runtime.start(workflow=workflow, run_id="f1"))
    fs.close()
    result = invoke(store, "--json", "report", "f1", "-o", str(tmp_path / "f.html"))
    doc = json.loads(result.stdout)
    assert doc["status"] == "failed" and doc["verified"] is True and doc["rows"] == 3
    html = (tmp_path / "f.html").read_text(encoding="utf-8")
    assert "boom &lt;b&gt;" in html or "boom \\u003cb\\u003e" in html
    assert '<body class="status-failed">' in html


def test_all_on_a_store_without_runs_is_not_found(tmp_path: Path) -> None:
    from abstractruntime import open_store

    open_store(tmp_path / "empty").close()
    proc = run_cli(tmp_path / "empty", "report", "--all", "-o", str(tmp_path / "site"))
    assert proc.returncode == 4 and "no runs" in proc.stderr
    assert not (tmp_path / "site").exists()


def test_at_shows_the_state_rebuilt_from_the_ledger(hostile_store: Path, tmp_path: Path) -> None:
    result = invoke(hostile_store, "--json", "report", "hostile", "--at", "3", "-o", str(tmp_path / "h.html"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "waiting"
    html = (tmp_path / "h.html").read_text(encoding="utf-8")
    assert "could not be rebuilt" not in html
    assert '<details class="state-waiting" open>' in html and "Approve &lt;script&gt;" in html
    assert "<script>window" not in html
