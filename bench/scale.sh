#!/usr/bin/env bash
# The VM directory at scale: one Proxy (a process of its own, so its CPU, memory and threads can be
# read from /proc) and N hosts (real daemons in one process, on loopback, each with one in-memory
# TAP carrying 10 VMs) started at once, then 10% of the VMs migrating live. For each N: the time
# until every daemon's view of every VM's location equals the truth, and what the Proxy spent.
# See docs/benchmarks.md, "Scale of the VM directory". No root needed.
# Usage: bench/scale.sh [N...]            (default: 50 100 200)
# Environment: VNET_DIR=a `dotnet publish` of src/Vnet.Cli to measure instead of this checkout;
# TIMEOUT=seconds a phase may take to converge (default 120); TRANSPORT=tcp|udp (default tcp);
# FRAME_PERIOD_MS=how often each VM sends a frame (default 1000);
# OUT=directory for the results: scale-N.json, and the Proxy's log proxy-N.log (default artifacts/scale).
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(50 100 200)
for n in "${counts[@]}"; do
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 2 ] || { echo "usage: $0 [N...] (N hosts, at least 2)" >&2; exit 2; }
done
out=${OUT:-$repo/artifacts/scale}
vnet_dir=${VNET_DIR:-}
if [ -z "$vnet_dir" ]; then
    vnet_dir=$repo/artifacts/bench-vnet
    dotnet publish "$repo/src/Vnet.Cli" -c Release -o "$vnet_dir" -nologo -clp:ErrorsOnly >/dev/null
fi
[ -f "$vnet_dir/vnet.dll" ] || { echo "no vnet.dll in $vnet_dir" >&2; exit 2; }
bench_dir=$repo/artifacts/bench-scale
dotnet publish "$repo/bench/Vnet.Benchmarks" -c Release -o "$bench_dir" -nologo -clp:ErrorsOnly >/dev/null
mkdir -p "$out"

# mktemp -d makes the directory 0700: the network key, the Proxy's socket and log live there.
work=$(mktemp -d /tmp/vnet-scale.XXXXXX)
run=

# The run stops its hosts and its Proxy itself when it gets SIGTERM (and removes its files); what
# follows is for a run that cannot: it is killed after a grace period, then the Proxy it started
# (by the PID it wrote, if that process is still a Proxy of this run), and the directory goes.
stop_run() {
    if [ -n "$run" ] && kill -0 "$run" 2>/dev/null; then
        kill -TERM "$run" 2>/dev/null || true
        timeout 60 tail --pid="$run" -f /dev/null 2>/dev/null || kill -KILL "$run" 2>/dev/null || true
    fi
    run=
    local f p
    for f in "$work"/*/proxy.pid; do
        [ -f "$f" ] || continue
        p=$(cat "$f")
        if [[ $p =~ ^[0-9]+$ ]] && grep -qF "$work" "/proc/$p/cmdline" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null || true
            timeout 10 tail --pid="$p" -f /dev/null 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
        fi
    done
}
cleanup() {
    stop_run
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "scale.sh: interrupted" >&2; exit 130' INT TERM

results=()
for n in "${counts[@]}"; do
    mkdir -m 700 "$work/n$n"
    rm -f "$out/scale-$n.json" "$out/proxy-$n.log"
    echo "== $n hosts ($(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg))"
    # In the background and waited for, so that Ctrl-C reaches the trap at once; the run itself
    # then gets SIGTERM from stop_run (a background job of a script ignores SIGINT).
    # The server GC for the hosts' process: 200 daemons share its heap, and a workstation GC's
    # pauses (seconds at 200 hosts) stop them all at once, longer than a star link may be silent.
    # The Proxy keeps its own GC (ProxyProcess removes the variable).
    DOTNET_gcServer=1 dotnet "$bench_dir/Vnet.Benchmarks.dll" scale --vnet "$vnet_dir/vnet.dll" --hosts "$n" \
        --timeout "${TIMEOUT:-120}" --frame-period-ms "${FRAME_PERIOD_MS:-1000}" --transport "${TRANSPORT:-tcp}" --work-dir "$work/n$n" --json "$out/scale-$n.json" --proxy-log "$out/proxy-$n.log" &
    run=$!
    rc=0
    wait "$run" || rc=$?
    run=
    [ "$rc" -eq 0 ] || echo "scale.sh: the run with $n hosts reported problems (exit $rc); see above" >&2
    [ -f "$out/scale-$n.json" ] && results+=("$out/scale-$n.json")
    rm -rf "${work:?}/n$n"
done
if [ ${#results[@]} -gt 0 ]; then
    echo
    echo "== results ($(date -u '+%Y-%m-%d %H:%M UTC'); JSON in $out)"
    dotnet "$bench_dir/Vnet.Benchmarks.dll" scale-table "${results[@]}"
fi
