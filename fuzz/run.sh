#!/usr/bin/env bash
# Coverage-guided fuzzing of VNET's decoders of untrusted input (see fuzz/README.md).
#
#   fuzz/run.sh list                      the targets
#   fuzz/run.sh TARGET [SECONDS]          fuzz one target (default 300 s)
#   fuzz/run.sh all [SECONDS]             every target, one after the other (default 60 s each)
#   fuzz/run.sh ci [SECONDS]              as CI runs it: every target (default 20 s each), stop a
#                                         target at its first crash; writes a TRX file if FUZZ_TRX is set
#   fuzz/run.sh repro TARGET FILE|DIR...  replay inputs (a finding's stack trace)
#   fuzz/run.sh seeds                     rewrite the generated seeds of every target into fuzz/corpus
#
# Engine: afl-fuzz (AFL++ from Debian's packages) driving a SharpFuzz out-of-process fork server;
# only the published copy of Vnet.Core.dll in fuzz/out/bin is instrumented, never the normal build.
# Each target first replays its committed corpus, then fuzzes from it. A crash or a hang that
# reproduces outside afl-fuzz fails the target; its input goes to fuzz/findings/TARGET/ with the
# stack trace and the command that reproduces it. Ends with "fuzz: N passed, N failed".
#
# Environment: FUZZ_TIMEOUT_MS (afl-fuzz -t per input, default 5000), FUZZ_TRX (write a TRX there).
set -euo pipefail

here="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
root="$(dirname "$here")"
out="$here/out"
bin="$out/bin"
tools="$out/tools"
findings="$here/findings"
sharpfuzz_version=2.3.0

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

log() { echo "fuzz: $*"; }

# afl-fuzz from Debian's afl++ package; the sharpfuzz tool from NuGet into fuzz/out/tools.
install_tools() {
    if ! command -v afl-fuzz >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            log "installing afl++ ..."
            export DEBIAN_FRONTEND=noninteractive
            apt-get install -y -qq --no-install-recommends afl++ >/dev/null 2>&1 \
                || { apt-get update -qq && apt-get install -y -qq --no-install-recommends afl++ >/dev/null; }
        fi
        command -v afl-fuzz >/dev/null || { log "afl-fuzz is missing: apt-get install afl++ (as root)"; return 1; }
    fi
    if [ ! -x "$tools/sharpfuzz" ]; then
        log "installing the sharpfuzz tool $sharpfuzz_version ..."
        dotnet tool install --tool-path "$tools" SharpFuzz.CommandLine --version "$sharpfuzz_version" >/dev/null
    fi
}

# Publishes the harness into a fresh folder and instruments its copy of Vnet.Core.
build() {
    log "building and instrumenting Vnet.Core ..."
    rm -rf "$bin"
    dotnet publish "$here/Vnet.Fuzz/Vnet.Fuzz.csproj" -c Release -nologo -clp:ErrorsOnly -o "$bin" >/dev/null \
        || { dotnet publish "$here/Vnet.Fuzz/Vnet.Fuzz.csproj" -c Release -nologo -clp:ErrorsOnly -o "$bin"; return 1; }
    DOTNET_ROLL_FORWARD=Major "$tools/sharpfuzz" "$bin/Vnet.Core.dll" >/dev/null
}

harness() { dotnet "$bin/Vnet.Fuzz.dll" "$@"; }

targets() { harness list | awk '{print $1}'; }

# Runs one target; prints PASS/FAIL; returns 1 on a finding.
fuzz_one() {
    local target=$1 seconds=$2 ci=$3
    local corpus="$here/corpus/$target" work="$out/afl/$target" found="$findings/$target"
    if [ ! -d "$corpus" ] || [ -z "$(ls -A "$corpus")" ]; then
        log "FAIL $target: no seeds in fuzz/corpus/$target"
        return 1
    fi
    rm -rf "$work" "$found"
    mkdir -p "$work"

    # 1. The committed corpus must pass as it is (afl-fuzz refuses to start on a crashing seed).
    if ! harness "$target" "$corpus" >"$work/replay.log" 2>&1; then
        cat "$work/replay.log"
        log "FAIL $target: a committed seed fails (reproduce: fuzz/run.sh repro $target fuzz/corpus/$target)"
        return 1
    fi

    # 2. Fuzz from it.
    local dict=() extra=()
    [ -f "$here/dict/$target.dict" ] && dict=(-x "$here/dict/$target.dict")
    [ "$ci" = 1 ] && extra=(AFL_BENCH_UNTIL_CRASH=1)
    log "$target: fuzzing for ${seconds}s ..."
    local status=0
    (cd "$work" && env AFL_SKIP_BIN_CHECK=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
        AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_FAST_CAL=1 AFL_FORKSRV_INIT_TMOUT=60000 "${extra[@]}" \
        DOTNET_GCHeapHardLimit=0x40000000 DOTNET_TieredPGO=0 \
        afl-fuzz -i "$corpus" -o "$work" -t "${FUZZ_TIMEOUT_MS:-5000}" -m none -V "$seconds" "${dict[@]}" \
        -- dotnet "$bin/Vnet.Fuzz.dll" "$target" >"$work/afl.log" 2>&1) || status=$?
    local stats="$work/default/fuzzer_stats"
    if [ ! -f "$stats" ]; then
        tail -n 30 "$work/afl.log"
        log "FAIL $target: afl-fuzz did not run (exit $status; log: $work/afl.log)"
        return 1
    fi
    local execs paths
    execs=$(awk -F: '/^execs_done/ {gsub(/ /, "", $2); print $2}' "$stats")
    paths=$(awk -F: '/^corpus_count/ {gsub(/ /, "", $2); print $2}' "$stats")

    # 3. Every crash and hang is replayed outside afl-fuzz for its stack trace.
    local failed=0 shown=0 file kind name replay
    shopt -s nullglob
    for kind in crashes hangs; do
        for file in "$work/default/$kind"/id:*; do
            mkdir -p "$found"
            name="${kind%es}-$(basename "$file" | cut -d, -f1 | tr -d ':')"
            [ "$kind" = hangs ] && name="hang-$(basename "$file" | cut -d, -f1 | tr -d ':')"
            cp "$file" "$found/$name"
            replay=0
            harness "$target" "$found/$name" >"$found/$name.txt" 2>&1 || replay=$?
            if [ "$kind" = hangs ] && [ "$replay" != 3 ]; then
                # Slow under afl-fuzz (a loaded machine, a child restarting) but not a hang on its own.
                log "$target: $name took over ${FUZZ_TIMEOUT_MS:-5000} ms under afl-fuzz but not on replay; not counted"
                continue
            fi
            failed=$((failed + 1))
            {
                echo "---- finding: fuzz/findings/$target/$name ($(stat -c %s "$found/$name") bytes)"
                echo "reproduce: fuzz/run.sh repro $target fuzz/findings/$target/$name"
                echo "input (base64): $(head -c 4096 "$found/$name" | base64 -w0)"
                head -n 40 "$found/$name.txt"
            } >>"$found/README.txt"
            # The log shows the first few in full (CI keeps no files); the rest are in the folder.
            shown=$((shown + 1))
            [ "$shown" -le 3 ] && sed -n '/^---- finding: fuzz\/findings\/'"$target\/$name"' /,$p' "$found/README.txt"
        done
    done
    shopt -u nullglob
    if [ "$failed" -gt 0 ]; then
        log "FAIL $target: $failed finding(s) in fuzz/findings/$target (README.txt there; $execs execs)"
        return 1
    fi
    log "PASS $target: ${execs} execs in ${seconds}s, corpus ${paths} inputs, no finding"
}

write_trx() {
    local file=$1 passed=$2 failed=$3
    shift 3
    local total=$((passed + failed)) now results="" entry name outcome
    now=$(date -u +%Y-%m-%dT%H:%M:%S.0000000+00:00)
    for entry in "$@"; do
        name=${entry%%=*} outcome=${entry#*=}
        results+="    <UnitTestResult testName=\"fuzz: $name\" outcome=\"$outcome\" computerName=\"$(hostname)\" startTime=\"$now\" endTime=\"$now\" />"$'\n'
    done
    mkdir -p "$(dirname "$file")"
    cat >"$file" <<EOF
<?xml version="1.0" encoding="utf-8"?>
<TestRun name="fuzz" xmlns="http://microsoft.com/schemas/VisualStudio/TeamTest/2010">
  <Results>
$results  </Results>
  <ResultSummary outcome="$([ "$failed" = 0 ] && echo Completed || echo Failed)">
    <Counters total="$total" executed="$total" passed="$passed" failed="$failed" error="0" timeout="0" aborted="0" inconclusive="0" passedButRunAborted="0" notRunnable="0" notExecuted="0" disconnected="0" warning="0" completed="0" inProgress="0" pending="0" />
  </ResultSummary>
</TestRun>
EOF
}

fuzz_many() {
    local seconds=$1 ci=$2 passed=0 failed=0 target
    local outcomes=()
    mapfile -t list < <(targets)
    for target in "${list[@]}"; do
        if fuzz_one "$target" "$seconds" "$ci"; then
            passed=$((passed + 1)) outcomes+=("$target=Passed")
        else
            failed=$((failed + 1)) outcomes+=("$target=Failed")
        fi
    done
    [ -n "${FUZZ_TRX:-}" ] && write_trx "$FUZZ_TRX" "$passed" "$failed" "${outcomes[@]}"
    echo "fuzz: $passed passed, $failed failed"
    [ "$failed" = 0 ]
}

command=${1:-}
[ -n "$command" ] || usage
cd "$root"
case "$command" in
    -h|--help) usage ;;
    list)
        install_tools && build
        harness list
        ;;
    repro)
        [ $# -ge 3 ] || usage
        install_tools && build
        shift
        harness "$@"
        ;;
    seeds)
        install_tools && build
        for target in $(targets); do harness seeds "$target" "$here/corpus/$target"; done
        ;;
    all|ci)
        seconds=${2:-$([ "$command" = ci ] && echo 20 || echo 60)}
        if ! install_tools || ! build; then
            [ -n "${FUZZ_TRX:-}" ] && write_trx "$FUZZ_TRX" 0 1 "setup=Failed"
            echo "fuzz: 0 passed, 1 failed"
            exit 1
        fi
        fuzz_many "$seconds" "$([ "$command" = ci ] && echo 1 || echo 0)"
        ;;
    *)
        install_tools && build
        targets | grep -qx "$command" || { log "unknown target '$command'"; harness list; exit 2; }
        if fuzz_one "$command" "${2:-300}" 0; then echo "fuzz: 1 passed, 0 failed"; else echo "fuzz: 0 passed, 1 failed"; exit 1; fi
        ;;
esac
