#!/bin/sh
# Run an approval workflow from a script: start it, read the wait from --json, answer it,
# then verify the run's ledger. POSIX sh; needs only abstractruntime and python3.
#
#   sh docs/examples/ci-approval.sh WORKFLOW.py ANSWER
#
# Environment: ABSTRACTRUNTIME_STORE (where runs are kept), ABSTRACTRUNTIME (the command).
set -eu

WORKFLOW=${1:?usage: ci-approval.sh WORKFLOW.py ANSWER}
ANSWER=${2:?usage: ci-approval.sh WORKFLOW.py ANSWER}
AR=${ABSTRACTRUNTIME:-abstractruntime}

# 1. Start the run. Exit 5 means "waiting": expected here, so capture the code ourselves.
status=0
"$AR" --no-input run "$WORKFLOW" --json > run.json || status=$?
if [ "$status" -ne 5 ]; then
    echo "expected the run to wait for approval (exit 5), got exit $status" >&2
    exit 1
fi

# 2. Read the run id and the question from the JSON (no jq needed).
RUN_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])' < run.json)
PROMPT=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["waiting"]["prompt"])' < run.json)
echo "run $RUN_ID asks: $PROMPT" >&2

# 3. Answer it. Exit 0 = completed; 2 = the answer is not one of the choices.
"$AR" resume "$RUN_ID" --answer "$ANSWER" --json > result.json
python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["output"]))' < result.json

# 4. Verify the ledger and publish its head hash (keep it to detect later rewrites).
"$AR" verify "$RUN_ID" --json > verify.json
HEAD=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["head_hash"])' < verify.json)
echo "verified $RUN_ID; ledger head $HEAD" >&2
