#!/usr/bin/env bash
# Start time and memory of a vnet build: how long a CLI command takes (keygen, which loads the
# crypto library), and how long a daemon takes from exec until its control socket answers
# `status`, with its RSS then. For comparing packagings (framework-dependent, single file, R2R,
# trimmed) side by side: docs/operations.md has the figures.
#
# Usage (root, for the TAP): bench/startup.sh [--runs 5] NAME=COMMAND ...
#   e.g. bench/startup.sh fdd="dotnet /tmp/pub/vnet.dll" single=/tmp/single/vnet
set -euo pipefail
runs=5
if [ "${1:-}" = --runs ]; then runs=$2; shift 2; fi
[ $# -gt 0 ] || { sed -n 2,9p "$0"; exit 2; }
work=$(mktemp -d /tmp/vnet-startup.XXXXXX)
ns=vnet-startup-$$
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ip netns add "$ns"
ms() { date +%s%N | cut -c1-13; }
printf '%-10s %14s %14s %16s %18s\n' build "keygen ms" "keygen RSS MB" "daemon ready ms" "daemon RSS MB"
for spec in "$@"; do
    name=${spec%%=*} cmd=${spec#*=}
    kg_t=() kg_m=() d_t=() d_m=()
    for ((i = 0; i < runs; i++)); do
        out=$( { /usr/bin/time -f '%e %M' $cmd keygen >/dev/null; } 2>&1 | tail -1)
        kg_t+=("$(awk '{printf "%d", $1*1000}' <<<"$out")") kg_m+=("$(awk '{printf "%.1f", $2/1024}' <<<"$out")")
        $cmd keygen > "$work/k" 2>/dev/null; chmod 600 "$work/k"
        sock=$work/c$i.sock
        start=$(ms)
        ip netns exec "$ns" $cmd daemon --name p --role proxy --listen 127.0.0.1:$((5600 + i)) --key-file "$work/k" --tap st$i \
            --control-socket "$sock" --log-level warning > "$work/d$i.log" 2>&1 &
        pid=$!
        ready=
        for ((w = 0; w < 300; w++)); do
            if [ -S "$sock" ] && $cmd status --socket "$sock" >/dev/null 2>&1; then ready=$(ms); break; fi
            sleep 0.02
        done
        [ -n "$ready" ] || { echo "$name: daemon not ready in 6 s" >&2; cat "$work/d$i.log" >&2; kill "$pid"; exit 1; }
        # Ready is when status answered; the status command's own start is included: subtract one keygen.
        d_t+=("$((ready - start))")
        d_m+=("$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$(pgrep -P "$pid" -n || echo "$pid")/status" 2>/dev/null || awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")")
        kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    done
    med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    printf '%-10s %14s %14s %16s %18s\n' "$name" "$(med "${kg_t[@]}")" "$(med "${kg_m[@]}")" "$(med "${d_t[@]}")" "$(med "${d_m[@]}")"
done
echo "(medians of $runs runs; 'daemon ready' includes one 'vnet status' start)"
