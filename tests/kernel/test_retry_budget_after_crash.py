"""A crash in the middle of an attempt does not use up the effect's retry budget."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from abstractruntime import open_store
from abstractruntime.storage.verify import verify_run

FLOW = textwrap.dedent('''
    import os, signal
    from pathlib import Path
    from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec

    CALLS = Path(os.environ["CALLS_FILE"])

    def flaky(run, effect):
        with CALLS.open("a") as f:
            f.write("call\\n")
        calls = len(CALLS.read_text().splitlines())
        if calls <= 2:
            os.kill(os.getpid(), signal.SIGKILL)  # the machine dies inside attempts 1 and 2
        if calls == 3:
            return EffectOutcome.failed("upstream 503", retryable=True)  # a recorded failure
        return EffectOutcome.completed({"ok": calls})

    handlers = {"llm_call": flaky}

    workflow = WorkflowSpec("flaky", "a", {
        "a": lambda run, ctx: StepPlan("a", next_node="b", effect=Effect(
            "llm_call", {"prompt": "hi"}, result_key="answer")),
        "b": lambda run, ctx: StepPlan("b", complete_output={"answer": run.vars["answer"]}),
    })
''')

TICK = textwrap.dedent('''
    import sys
    sys.path.insert(0, sys.argv[1])
    import flow
    from abstractruntime import DefaultEffectPolicy, EffectType, open_store
    policy = DefaultEffectPolicy(default_max_attempts=2, default_backoff_base=0.0)
    handlers = {EffectType(k): v for k, v in flow.handlers.items()}
    rt = open_store(sys.argv[2]).runtime(effect_handlers=handlers, effect_policy=policy)
    if sys.argv[4] == "start":
        rt.start(workflow=flow.workflow, run_id=sys.argv[3])
    rt.tick(workflow=flow.workflow, run_id=sys.argv[3])
''')


def test_attempts_killed_by_a_crash_are_not_counted_as_failures(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "flow.py").write_text(FLOW)
    store = tmp_path / "runs"
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "CALLS_FILE": str(calls)}

    codes = []
    for phase in ("start", "tick", "tick"):
        proc = subprocess.run([sys.executable, "-c", TICK, str(code), str(store), "run-1", phase],
                              env=env, timeout=60)
        codes.append(proc.returncode)
    assert codes[:2] == [-9, -9]  # really killed twice, inside the handler
    assert codes[2] == 0

    # Two attempts were allowed: the one recorded failure (call 3) left one more, and it succeeded.
    assert len(calls.read_text().splitlines()) == 4
    run = open_store(store).runtime().get_state("run-1")
    assert run.status.value == "completed", run.error
    assert run.output == {"answer": {"ok": 4}}
    assert verify_run(store, "run-1").ok
