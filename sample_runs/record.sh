#!/bin/sh
# Regenerate sample_runs/store/ with the real `abstractruntime` command.
#
#   sh sample_runs/record.sh            (from anywhere; needs `abstractruntime` on PATH,
#                                        or ABSTRACTRUNTIME=/path/to/abstractruntime)
#   sh sample_runs/record.sh --reports-only
#                                       (only rewrite reports/ from the recorded store)
#
# Each step's expected exit code is checked, so a behaviour change fails loudly here.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
AR=${ABSTRACTRUNTIME:-abstractruntime}
case "$AR" in /*) ;; */*) AR="$(pwd)/$AR" ;; esac   # the report step runs from another directory
STORE="$HERE/store"
WF="$HERE/workflows"

# expect CODE COMMAND...: run a command, fail unless it exits with CODE.
expect() {
    want=$1; shift
    set +e
    "$@" >/dev/null
    got=$?
    set -e
    if [ "$got" -ne "$want" ]; then
        echo "record.sh: expected exit $want, got $got: $*" >&2
        exit 1
    fi
}

# write_reports: one self-contained HTML page per run, plus reports/index.html. It runs from
# the repository root with a relative --store, so the pages name a path that works in a clone.
write_reports() {
    rm -rf "$HERE/reports"
    (cd "$HERE/.." && expect 0 "$AR" --store sample_runs/store report --all -o sample_runs/reports)
    rm -f "$STORE"/index.sqlite3*
}

if [ "${1:-}" = "--reports-only" ]; then
    write_reports
    echo "reports written in $HERE/reports" >&2
    exit 0
fi

rm -rf "$STORE"
export ABSTRACTRUNTIME_STORE="$STORE"
export ABSTRACTRUNTIME_NO_INPUT=1   # never prompt, even when run from a terminal

# 1. Approval flow: approved, rejected, and one left waiting for an answer.
expect 5 "$AR" --no-input run "$WF/approval.py" --run-id approval-approved --var service=billing
expect 0 "$AR" resume approval-approved --current --answer yes
expect 5 "$AR" --no-input run "$WF/approval.py" --run-id approval-rejected --var service=search
expect 0 "$AR" resume approval-rejected --current --answer no
expect 5 "$AR" --no-input run "$WF/approval.py" --run-id approval-waiting --var service=payments

# 1b. The same approval written as one function (approval_flow.py): approved, and one waiting.
expect 5 "$AR" --no-input run "$WF/approval_flow.py" --run-id approval-flow-approved --var service=billing
expect 0 "$AR" resume approval-flow-approved@w1 --answer yes
expect 5 "$AR" --no-input run "$WF/approval_flow.py" --run-id approval-flow-waiting --var service=payments
# The deploy check: the code-first runs replay against their file, writing nothing.
expect 0 "$AR" replay --workflow "$WF/approval_flow.py" --all

# 2. Timer: waits one second, then `tick --due` finishes it.
expect 5 "$AR" run "$WF/timer.py" --run-id timer-done --var delay_seconds=1
sleep 2
expect 0 "$AR" tick --due

# 3. Event: waits on payment:o-42 until `emit` delivers it.
expect 5 "$AR" run "$WF/event.py" --run-id event-paid --var order_id=o-42
expect 0 "$AR" emit payment:o-42 --payload '{"amount": 19.99, "currency": "EUR"}'

# 4. Local tools: the workflow file's `tools` run in-process.
expect 0 "$AR" run "$WF/tools.py" --run-id tools-run --var text="durable runs survive restarts"

# 5. An LLM agent (agent.py) against a scripted OpenAI-compatible server on 127.0.0.1:
#    get_weather runs at once; send_email waits for `tools approve` / `tools deny`.
LLM_URL_FILE=$(mktemp)
python3 "$HERE/scripted_llm.py" "$LLM_URL_FILE" &
LLM_PID=$!
trap 'kill "$LLM_PID" 2>/dev/null || true; rm -f "$LLM_URL_FILE"' EXIT
i=0
while [ ! -s "$LLM_URL_FILE" ]; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then echo "record.sh: scripted LLM server did not start" >&2; exit 1; fi
    sleep 0.1
done
export ABSTRACTRUNTIME_SERVER="$(cat "$LLM_URL_FILE")"
export ABSTRACTRUNTIME_MODEL=scripted
Q='What is the weather in Paris? Email it to ana@example.com'
expect 5 "$AR" run "$WF/agent.py" --llm hybrid --run-id agent-approved --var question="$Q"
expect 0 "$AR" tools approve agent-approved --llm hybrid
expect 5 "$AR" run "$WF/agent.py" --llm hybrid --run-id agent-denied --var question="$Q"
expect 0 "$AR" tools deny agent-denied --llm hybrid --reason "no emails today"
expect 5 "$AR" run "$WF/agent.py" --llm remote --run-id agent-remote --var question="$Q"
expect 5 "$AR" tools approve agent-remote --llm remote
# 5b. The agent written as one function (agent_flow.py), approved like agent-approved.
expect 5 "$AR" run "$WF/agent_flow.py" --llm hybrid --run-id agent-flow-approved --var question="$Q"
expect 0 "$AR" tools approve agent-flow-approved --llm hybrid
unset ABSTRACTRUNTIME_SERVER ABSTRACTRUNTIME_MODEL
kill "$LLM_PID"
wait "$LLM_PID" 2>/dev/null || true

# 6. A snapshot of the waiting approval, and a bookmark on the approved run's head.
expect 0 "$AR" snapshot create approval-waiting --name before-answer --tag demo
expect 0 "$AR" bookmark add approval-approved approved --note "approved by release manager"

# 7. A deliberately tampered run: approved, then its recorded answer is edited in place.
expect 5 "$AR" --no-input run "$WF/approval.py" --run-id tampered --var service=billing
expect 0 "$AR" resume tampered --current --answer no
python3 - "$STORE/runs/tampered/ledger.jsonl" <<'PY'
import sys
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
assert '"answer":"no"' in text, "expected the recorded answer in the ledger"
open(path, "w", encoding="utf-8").write(text.replace('"answer":"no"', '"answer":"yes"'))
PY

# Everything but the tampered run verifies; the index is a cache and is not kept.
expect 3 "$AR" verify --all
rm -f "$STORE"/index.sqlite3*

# 8. A report of every run (the tampered one shows its failed verification).
write_reports
echo "sample runs recorded in $STORE, reports in $HERE/reports" >&2
