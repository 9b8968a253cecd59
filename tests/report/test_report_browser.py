"""The generated pages in a real browser: headless Chromium, network cut off.

Skipped only when chromium/chromedriver/selenium are absent and CI is not "true".
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from report_browser import Browser, png_colours
from report_support import (BIN, BREAKOUT, ENTITIES, HOSTILE, HOSTILE_NODE, RTL, big_run, copy_samples,
                            hostile_run, sample_run_ids)


def _report(store: Path, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
    proc = subprocess.run([str(BIN), "--store", str(store), "--json", "report", *args], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(store, dir)``: a copy of the sample store and its pages from ``report --all``."""
    base = tmp_path_factory.mktemp("site")
    store = copy_samples(base)
    _report(store, "--all", "-o", str(base / "pages"))
    return store, base / "pages"


def _errors(browser: Browser) -> list[dict]:
    return [e for e in browser.logs("browser") if e.get("level") == "SEVERE"]


def test_the_network_detector_sees_a_request(browser: Browser, tmp_path: Path) -> None:
    """A control: a page that does fetch something is caught (so an empty list means something)."""
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/x.png"></body></html>')
    browser.open(page)
    time.sleep(0.5)
    assert any("example.invalid" in url for url in browser.requests())


@pytest.mark.parametrize("run_id", sample_run_ids())
def test_sample_report_in_the_browser(browser: Browser, site: tuple[Path, Path], run_id: str,
                                      tmp_path: Path) -> None:
    store, pages = site
    browser.open(pages / f"{run_id}.html")
    assert browser.js("return document.body.getAttribute('data-ready')") == "1"
    # header and verdict
    checkpoint = json.loads((store / "runs" / run_id / "run.json").read_text())
    assert browser.js("return document.getElementById('f-run').textContent") == run_id
    run = checkpoint["run"] if "run" in checkpoint else checkpoint["state"]["run"]  # run.json format 2, or 3
    assert browser.js("return document.getElementById('status-badge').textContent") == run["status"]
    ok = browser.js("return document.getElementById('verdict').dataset.ok")
    headline = browser.js("return document.querySelector('#verdict .headline').textContent")
    if run_id == "tampered":
        assert ok == "false" and "Verification FAILED" in headline
    else:
        assert ok == "true" and "Verified" in headline
    assert browser.js("return document.getElementById('head-hash').textContent") == checkpoint["ledger"]["head_hash"]
    # the highlighted path: visited nodes and taken edges drawn as such
    data = browser.js("return JSON.parse(document.getElementById('report-data').textContent)")
    labels = browser.js("return Array.from(document.querySelectorAll('svg.graph g.node.visited text'))"
                        ".map(t => t.textContent)")
    assert sorted(labels) == sorted(data["graph"]["visited"])
    taken = browser.js("return document.querySelectorAll('svg.graph g.edge.taken').length")
    assert taken == len(data["graph"]["taken"]) + (1 if browser.js(
        "return !!document.querySelector('svg.graph g.node.start')") else 0)
    # one timeline row per ledger record
    records = len((store / "runs" / run_id / "ledger.jsonl").read_text().splitlines())
    assert browser.js("return document.querySelectorAll('#rows > details.row').length") == records
    # nothing was requested, nothing failed
    assert browser.requests() == []
    assert browser.js("return performance.getEntriesByType('resource').length") == 0
    assert _errors(browser) == []
    shot = browser.screenshot(tmp_path / f"{run_id}.png")
    assert shot.stat().st_size > 20_000
    assert png_colours(shot) > 30


def test_expanding_an_llm_call_shows_its_messages(browser: Browser, site: tuple[Path, Path]) -> None:
    _, pages = site
    browser.open(pages / "agent-approved.html")
    row = "document.querySelector('#rows > details.row[data-etype=llm_call].st-completed')"
    assert browser.js(f"return {row}.open") is False
    assert browser.js(f"return {row}.querySelectorAll('.msg').length") == 0  # built on demand
    browser.driver.execute_script(f"{row}.querySelector('summary').click()")
    assert browser.js(f"return {row}.open") is True
    roles = browser.js(f"return Array.from({row}.querySelectorAll('.msg .who')).map(e => e.textContent)")
    assert roles == ["system", "user"]
    texts = browser.js(f"return Array.from({row}.querySelectorAll('.msg .content')).map(e => e.textContent)")
    assert texts[1] == "What is the weather in Paris? Email it to ana@example.com"
    assert "helpful assistant" in texts[0]
    response = browser.js(f"return {row}.querySelector('.response').innerText")
    assert "get_weather" in response and "Paris" in response
    assert browser.js(f"return {row}.querySelector('.response').getBoundingClientRect().height") > 20
    # the approval: the resume row names the decision and the calls' hash
    browser.driver.execute_script("document.querySelector('#rows > details.row.kind-resume summary').click()")
    answer = browser.js("return document.querySelector('#rows > details.row.kind-resume .answer').innerText")
    assert "decision: approved" in answer and "01fa2021f659" in answer


def test_tampered_report_points_at_the_edited_record(browser: Browser, site: tuple[Path, Path]) -> None:
    _, pages = site
    browser.open(pages / "tampered.html")
    assert browser.js("return document.querySelector('[data-check=chain] .state').textContent") == "failed"
    assert browser.js("return document.getElementById('seq-4').classList.contains('bad')") is True
    assert "record_hash_mismatch" in browser.js("return document.querySelector('#seq-4 .mark.problem').textContent")
    browser.driver.execute_script("document.querySelector('#verdict .problems a').click()")
    assert browser.js("return document.getElementById('seq-4').open") is True


def test_hostile_text_stays_text(browser: Browser, tmp_path: Path) -> None:
    store = tmp_path / "store"
    hostile_run(store)
    for layout in ("auto", "simple"):
        page = tmp_path / f"hostile-{layout}.html"
        _report(store, "hostile", "-o", str(page), "--layout", layout)
        browser.open(page)
        browser.driver.execute_script(
            "document.querySelectorAll('#rows > details.row > summary').forEach(s => s.click())")
        assert browser.js("return window.__pwned === undefined") is True
        assert browser.js("return document.querySelectorAll('#rows img, #rows script, header img').length") == 0
        body = browser.js("return document.body.innerText")
        for needle in ("Approve " + HOSTILE + "?", "LLM says " + BREAKOUT, ENTITIES):
            assert needle in body or needle.replace(" ", "") in body.replace(" ", ""), needle
        answer = browser.js("return document.querySelector('.kind-resume .answer .prompt').textContent")
        assert answer == RTL + " " + HOSTILE + " " + ENTITIES
        names = browser.js("return Array.from(document.querySelectorAll('svg.graph g.node text'))"
                           ".map(t => t.textContent)")
        assert HOSTILE_NODE in names
        # bidi and zero-width text cannot reorder or break the row layout
        boxes = browser.js("""return Array.from(document.querySelectorAll('#rows > details.row > summary')).map(s => {
            const r = c => s.querySelector(c).getBoundingClientRect();
            return [r('.seq').left, r('.node').left, r('.sum').left, r('.dur').left, s.getBoundingClientRect().height];
        })""")
        for seq_x, node_x, sum_x, dur_x, height in boxes:
            assert seq_x < node_x < sum_x < dur_x
            assert height < 40
        assert browser.requests() == [] and _errors(browser) == []


def test_ten_thousand_steps_open_and_paginate(browser: Browser, tmp_path: Path) -> None:
    store = tmp_path / "store"
    big_run(store, steps=10_000)
    started = time.perf_counter()
    doc = _report(store, "big", "-o", str(tmp_path / "big.html"))
    written = time.perf_counter() - started
    assert doc["rows"] > 10_000
    started = time.perf_counter()
    browser.open(Path(doc["path"]))
    opened = time.perf_counter() - started
    print(f"\n10k-step report: written in {written:.2f} s (CLI process), opened in {opened:.2f} s, "
          f"{doc['bytes'] / 1e6:.1f} MB")
    assert browser.js("return document.querySelectorAll('#rows > details.row').length") == 500
    pages = -(-doc["rows"] // 500)
    assert browser.js("return document.getElementById('page-info').textContent").startswith(f"page 1 of {pages}")
    browser.driver.execute_script("document.getElementById('next').click()")
    assert browser.js("return document.querySelector('#rows > details.row').id") == "seq-501"
    browser.driver.execute_script("location.hash = '#seq-9000'")
    time.sleep(0.2)
    assert browser.js("return document.getElementById('seq-9000').open") is True
    assert browser.js("return document.getElementById('page-info').textContent").startswith(f"page 18 of {pages}")
    browser.driver.execute_script("const s = document.getElementById('filter-kind'); s.value = 'llm_call'; "
                                  "s.dispatchEvent(new Event('change'));")
    llm_rows = browser.js("return document.querySelectorAll('#rows > details.row').length")
    assert 0 < llm_rows < 500
    kinds = browser.js("return Array.from(document.querySelectorAll('#rows > details.row')).map(r => r.dataset.etype)")
    assert set(kinds) == {"llm_call"}
    browser.driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    assert browser.js("return 1 + 1") == 2  # still responsive
    assert browser.requests() == [] and _errors(browser) == []


def test_the_policy_blocks_markup_that_got_through(browser: Browser, site: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    """Defence in depth: were some text ever written as markup, the page's policy stops it."""
    _, pages = site
    html = (pages / "approval-approved.html").read_text(encoding="utf-8")
    injected = html.replace("<main>", '<main><script>window.__pwned = 1</script>'
                            '<img src="http://example.invalid/i.png"><p id="styled" style="color: red">x</p>', 1)
    page = tmp_path / "injected.html"
    page.write_text(injected, encoding="utf-8")
    browser.open(page)
    assert browser.js("return window.__pwned === undefined") is True
    assert browser.js("return document.body.getAttribute('data-ready')") == "1"  # the page's own script ran
    assert browser.js("return getComputedStyle(document.getElementById('styled')).color") != "rgb(255, 0, 0)"
    assert browser.network() == {"http://example.invalid/i.png": "csp"}  # attempted, never sent


def test_index_page(browser: Browser, site: tuple[Path, Path]) -> None:
    _, pages = site
    browser.open(pages / "index.html")
    links = browser.js("return Array.from(document.querySelectorAll('table.index a')).map(a => a.textContent)")
    assert links == sample_run_ids()
    failed = browser.js("return Array.from(document.querySelectorAll('td.v-failed'))"
                        ".map(td => td.closest('tr').dataset.run)")
    assert failed == ["tampered"]
    assert browser.requests() == [] and _errors(browser) == []
    browser.driver.execute_script("document.querySelector('a[href=\"tampered.html\"]').click()")
    assert browser.js("return document.getElementById('verdict').dataset.ok") == "false"
