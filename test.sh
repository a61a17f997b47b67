#!/usr/bin/env bash
# The project's test command: builds in Release, runs every test, and ends with ONE line
# "N passed, N failed" (CI reads that line, not dotnet test's own summary).
# Usage: sudo ./test.sh [extra dotnet test arguments, e.g. --filter FullyQualifiedName~Forwarding]
# Root is needed: end-to-end tests make network namespaces, and fail (not skip) without it.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

# A fresh directory per run, so that only this run's TRX files are counted.
results="$PWD/TestResults/run-$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$results"
# Background processes and test beds write their logs here (see tests/Vnet.Tests/TestBed).
export VNET_TEST_LOGS="$results/logs"

if ! dotnet build Vnet.slnx -c Release -nologo -clp:ErrorsOnly; then
    echo "build failed; no test ran"
    echo "0 passed, 0 failed"
    exit 1
fi

# The hang timeout keeps one stuck test from eating CI's 90 minutes; dumps are off because CI
# keeps no artifacts and a full dump of the test host takes minutes.
set +e
dotnet test Vnet.slnx -c Release --no-build \
    --logger "trx" \
    --results-directory "$results" \
    --blame-hang-timeout 15m --blame-hang-dump-type none \
    "$@"
test_status=$?
set -e

# Sums one attribute of the <Counters .../> element over every TRX file of this run.
counter() {
    local name=$1 file sum=0 value
    for file in "${trx_files[@]}"; do
        value=$(grep -o "<Counters [^>]*" "$file" | grep -o " $name=\"[0-9]*\"" | grep -o "[0-9]\+" || true)
        sum=$((sum + ${value:-0}))
    done
    echo "$sum"
}

mapfile -t trx_files < <(find "$results" -name '*.trx' -type f)
passed=0
failed=0
if [ "${#trx_files[@]}" -gt 0 ]; then
    passed=$(( $(counter passed) + $(counter passedButRunAborted) ))
    failed=$(( $(counter failed) + $(counter error) + $(counter timeout) + $(counter aborted) ))
fi

# A hang or a crash of the test host aborts the run; the test that was running then has no
# result in the TRX, so the abort itself is counted as a failure rather than hidden.
if [ "$test_status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "dotnet test exited with $test_status (run aborted: hang, crash, or bad arguments); counting one failure"
    failed=1
fi

echo "test results and logs: $results"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
