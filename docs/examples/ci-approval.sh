#!/bin/sh
# Run an approval workflow from a script: start it, read the wait from --json, answer it,
# then verify the run's ledger. POSIX sh; needs only abstractruntime and python3.
#
#   sh docs/examples/ci-approval.sh WORKFLOW.py ANSWER
#
# Environment: ABSTRACTRUNTIME_STORE (where runs are kept), ABSTRACTRUNTIME (the command).
# The JSON it reads goes to a temporary directory, removed on exit.
set -eu

WORKFLOW=${1:?usage: ci-approval.sh WORKFLOW.py ANSWER}
ANSWER=${2:?usage: ci-approval.sh WORKFLOW.py ANSWER}
AR=${ABSTRACTRUNTIME:-abstractruntime}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# 1. Start the run. Exit 5 means "waiting": expected here, so capture the code ourselves.
status=0
"$AR" run "$WORKFLOW" --no-input --json > "$TMP/run.json" || status=$?
if [ "$status" -ne 5 ]; then
    echo "expected the run to wait for approval (exit 5), got exit $status" >&2
    exit 1
fi

# 2. Read the wait handle and the question from the JSON (no jq needed).
HANDLE=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["wait_handle"])' < "$TMP/run.json")
PROMPT=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["waiting"]["prompt"])' < "$TMP/run.json")
echo "run $HANDLE asks: $PROMPT" >&2

# 3. Answer that wait. Exit 0 = completed; 2 = the answer is not one of the choices;
#    1 = that wait was already answered (a retried step): nothing is written.
"$AR" resume "$HANDLE" --answer "$ANSWER" --json > "$TMP/result.json"
python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["output"]))' < "$TMP/result.json"

# 4. Verify the ledger and publish its head hash (keep it to detect later rewrites).
"$AR" verify "$HANDLE" --json > "$TMP/verify.json"
HEAD=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["head_hash"])' < "$TMP/verify.json")
echo "verified $HANDLE; ledger head $HEAD" >&2
