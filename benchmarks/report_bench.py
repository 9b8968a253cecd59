"""How long ``abstractruntime report`` takes on a large run (prints the times; asserts nothing).

    python -m benchmarks.report_bench                 # 10,000 steps
    python -m benchmarks.report_bench --steps 50000 --browser

It records a run of N plain steps (an LLM call every 500, answered by a stub handler) into
a temporary store, then times, best of ``--repeat``: reading the run (ledger, verification,
bookmarks, snapshots), building the page, and the whole ``write_report``. With ``--browser``
and Debian's chromium + chromium-driver + selenium installed, it also times opening the page
in headless Chromium until its first timeline page is drawn.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


def record_run(root: Path, steps: int) -> str:
    """A completed run of about ``steps`` ledger records."""
    from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec, open_store

    def llm(run: Any, effect: Any, default_next: Any = None) -> Any:
        return EffectOutcome.completed({"content": f"answer {run.vars.get('i')}", "tool_calls": [], "model": "stub"})

    def step(run: Any, ctx: Any) -> Any:
        i = run.vars["i"] = run.vars.get("i", 0) + 1
        if i >= steps:
            return StepPlan("step", complete_output={"steps": i})
        if i % 500 == 0:
            return StepPlan("step", next_node="check", effect=Effect(
                EffectType.LLM_CALL, {"messages": [{"role": "user", "content": f"step {i}?"}]}, result_key="llm"))
        return StepPlan("step", next_node="step")

    def check(run: Any, ctx: Any) -> Any:
        return StepPlan("check", next_node="step")

    workflow = WorkflowSpec("bench", entry_node="step", nodes={"step": step, "check": check})
    store = open_store(root, durability="none")
    runtime = store.runtime(effect_handlers={EffectType.LLM_CALL: llm})
    run_id = runtime.start(workflow=workflow, run_id="bench")
    runtime.tick(workflow=workflow, run_id=run_id, max_steps=steps * 2)
    store.close()
    return run_id


def _best(repeat: int, fn: Any) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - started)
    return best, value


def browser_open(path: Path) -> float:
    """Seconds from navigation to the page's first drawn timeline page, in headless Chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="report-bench-")
    options = Options()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--proxy-server=127.0.0.1:9", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    try:
        started = time.perf_counter()
        driver.get(path.resolve().as_uri())
        while driver.execute_script("return document.body.getAttribute('data-ready')") != "1":
            time.sleep(0.01)
        return time.perf_counter() - started
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Record, time, print one JSON line of results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="also time opening the page in headless Chromium")
    args = parser.parse_args(argv)

    from abstractruntime import open_store
    from abstractruntime.report import load_run, render_run, write_report

    work = Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        run_id = record_run(work / "store", args.steps)
        store = open_store(work / "store", durability="none")
        load_s, data = _best(args.repeat, lambda: load_run(store, run_id, related=0))
        render_s, (html, info) = _best(args.repeat, lambda: render_run(data))
        total_s, item = _best(args.repeat, lambda: write_report(store, run_id, work / "report.html"))
        result = {"steps": args.steps, "records": info["rows"], "bytes": len(html.encode()),
                  "graph_engine": info["graph_engine"], "load_s": round(load_s, 3), "render_s": round(render_s, 3),
                  "write_report_s": round(total_s, 3)}
        if args.browser:
            result["browser_open_s"] = round(browser_open(Path(item.path)), 3)
        store.close()
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
