#!/usr/bin/env bash
# The project's test command: builds in Release, runs every test, and ends with ONE line
# "N passed, N failed" (CI reads that line, not dotnet test's own summary).
# Usage: sudo ./test.sh [extra dotnet test arguments, e.g. --filter FullyQualifiedName~Forwarding]
# Without arguments it also fuzzes every decoder for 20 s each (fuzz/README.md; VNET_FUZZ=0 skips).
# Root is needed: end-to-end tests make network namespaces, and fail (not skip) without it.
# Without root, `dotnet test tests/Vnet.Tests` runs the unit and in-process tests alone.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

# The end-to-end tests run real tools in the namespaces; on a fresh Debian machine, fetch the
# missing ones (as .ci/run does) so that this one command is all a newcomer needs.
# Each need is PACKAGE:COMMAND, PACKAGE:/FILE, or PACKAGE:dpkg (installed as a package: a kernel,
# or busybox-static, which installs the same /bin/busybox as busybox but statically linked).
missing=()
for need in libpcap0.8:/usr/lib/x86_64-linux-gnu/libpcap.so.0.8 iperf3:iperf3 dnsmasq-base:dnsmasq udhcpc:udhcpc \
            iputils-ping:ping iputils-arping:arping ethtool:ethtool iproute2:ip nftables:nft conntrack:conntrack \
            qemu-system-x86:qemu-system-x86_64 linux-image-amd64:dpkg busybox-static:dpkg chromium:/usr/bin/chromium; do
    pkg=${need%%:*} what=${need#*:}
    if [[ $what == dpkg ]]; then
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    elif [[ $what == /* ]]; then [ -e "$what" ] || missing+=("$pkg"); else command -v "$what" >/dev/null || missing+=("$pkg"); fi
done
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} ..."
    export DEBIAN_FRONTEND=noninteractive
    # The kernel is only booted by the QEMU guests of the tests, with their own initramfs: INITRD=No
    # stops its install from making one for /boot (minutes of update-initramfs on two cores).
    export INITRD=No
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi

# A fresh directory per run, so that only this run's TRX files are counted.
results="$PWD/TestResults/run-$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$results"
# Background processes and test beds write their logs here (see tests/Vnet.FunctionalTests/TestBed).
export VNET_TEST_LOGS="$results/logs"

if ! dotnet build Vnet.slnx -c Release -nologo -clp:ErrorsOnly; then
    echo "build failed; no test ran"
    echo "0 passed, 0 failed"
    exit 1
fi

# Unit and in-process tests first (no root needed), then the end-to-end tests in network
# namespaces; one after the other, so that the namespace tests have the machine's two cores.
# The hang timeout keeps one stuck test from eating CI's 90 minutes; dumps are off because CI
# keeps no artifacts and a full dump of the test host takes minutes.
set +e
test_status=0
for project in tests/Vnet.Tests tests/Vnet.FunctionalTests; do
    dotnet test "$project" -c Release --no-build \
        --logger "trx" \
        --results-directory "$results" \
        --blame-hang-timeout 15m --blame-hang-dump-type none \
        "$@"
    status=$?
    [ "$status" -ne 0 ] && test_status=$status
done

# Coverage-guided fuzzing (fuzz/README.md): every decoder of untrusted input for a short fixed time
# from its committed corpus, one test result per target (fuzz/run.sh writes a TRX file here, counted
# below with the others). Left out of a filtered run (extra arguments) and with VNET_FUZZ=0.
if [ $# -eq 0 ] && [ "${VNET_FUZZ:-1}" != 0 ]; then
    FUZZ_TRX="$results/fuzz.trx" fuzz/run.sh ci "${VNET_FUZZ_SECONDS:-20}"
    status=$?
    [ "$status" -ne 0 ] && test_status=$status
fi
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
