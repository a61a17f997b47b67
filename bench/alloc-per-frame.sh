#!/usr/bin/env bash
# Bytes the daemons allocate per forwarded frame in steady state, end to end: two daemons in
# namespaces (a Proxy and a host, each with a TAP bridged to a VM namespace), 10 s of iperf3 over
# a TCP link and then over a UDP link, GC.GetTotalAllocatedBytes sampled before and after.
# Usage (root): bench/alloc-per-frame.sh
# Environment: VNET_DIR=a `dotnet publish` of src/Vnet.Cli to measure instead of building this
# checkout; PREFIX=namespace prefix (default vab), to run beside another measurement; QUEUES=N
# gives both TAPs N receive queues (--tap-queues, a reader thread each).
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
out=${VNET_DIR:-}
if [ -z "$out" ]; then
    out="$repo/artifacts/bench-vnet"
    dotnet publish "$repo/src/Vnet.Cli" -c Release -o "$out" -nologo -clp:ErrorsOnly >/dev/null
fi
vnet="dotnet $out/vnet.dll"
P=${PREFIX:-vab}
[[ $P =~ ^[a-z0-9]{1,8}$ ]] || { echo "PREFIX must be 1-8 of [a-z0-9]" >&2; exit 2; }
Q=${QUEUES:-1}
[[ $Q =~ ^[0-9]+$ ]] && ((Q >= 1 && Q <= 16)) || { echo "QUEUES must be 1..16" >&2; exit 2; }
# Keys go in files that only root reads (mktemp -d makes the directory 0700), not on the daemons' command lines.
keys=$(mktemp -d /tmp/vnet-alloc-keys.XXXXXX)
pids=()
# Stops exactly the daemons this script started (by PID: `ip netns exec` and the dotnet host exec
# into the daemon), then deletes this script's namespaces.
stop() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true; done
    pids=()
    for n in a b va vb; do ip netns del $P$n 2>/dev/null || true; done
}
cleanup() { stop; rm -rf "$keys"; }
trap cleanup EXIT
measure() {
    local transport=$1
    stop
    for n in a b va vb; do ip netns add $P$n; ip -n $P$n link set lo up; ip netns exec $P$n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; done
    ip link add phys netns ${P}a type veth peer name phys netns ${P}b
    ip -n ${P}a addr add 192.0.2.1/24 dev phys; ip -n ${P}a link set phys up
    ip -n ${P}b addr add 192.0.2.2/24 dev phys; ip -n ${P}b link set phys up
    for s in a b; do
        ip -n $P$s link add br0 type bridge; ip -n $P$s link set br0 up
        ip link add eth0 netns $P"v"$s type veth peer name vm netns $P$s
        ip -n $P$s link set vm master br0 up
    done
    ip -n ${P}va link set eth0 up; ip -n ${P}va addr add 10.9.0.1/24 dev eth0
    ip -n ${P}vb link set eth0 up; ip -n ${P}vb addr add 10.9.0.2/24 dev eth0
    rm -f "$keys"/*.key
    $vnet keygen -o "$keys/a.key" >/dev/null
    $vnet keygen -o "$keys/b.key" >/dev/null
    ip netns exec ${P}a $vnet daemon --name ${P}-a --role proxy --listen 192.0.2.1:5500 --key-file "$keys/a.key" --admit "${P}-b=$($vnet pubkey <"$keys/b.key")" --tap tap0 --tap-queues $Q --lan tap0 --control-socket /tmp/$P-a.sock --log-level warning >/dev/null 2>&1 &
    pids+=($!)
    ip netns exec ${P}b $vnet daemon --name ${P}-b --role host --listen 192.0.2.2:5500 --key-file "$keys/b.key" --proxy 192.0.2.1:5500 --proxy-key "$($vnet pubkey <"$keys/a.key")" --proxy-name ${P}-a --transport "$transport" --tap tap0 --tap-queues $Q --control-socket /tmp/$P-b.sock --log-level warning >/dev/null 2>&1 &
    pids+=($!)
    for i in $(seq 1 100); do [ -S /tmp/$P-a.sock ] && [ -S /tmp/$P-b.sock ] && ip -n ${P}a link show tap0 >/dev/null 2>&1 && ip -n ${P}b link show tap0 >/dev/null 2>&1 && break; sleep 0.1; done
    ip -n ${P}a link set tap0 master br0; ip -n ${P}b link set tap0 master br0
    sleep 1
    # Two answers within 20 s: right after the start the first requests may go unanswered.
    ip netns exec ${P}va ping -c 2 -i 0.2 -w 20 10.9.0.2 >/dev/null
    ip netns exec ${P}vb iperf3 -s -D -1
    sleep 0.3
    # Warm-up: JIT tiers and buffer pools settle before the measured run.
    ip netns exec ${P}va iperf3 -c 10.9.0.2 -t 6 -P 2 >/dev/null
    ip netns exec ${P}vb iperf3 -s -D -1
    sleep 0.3
    local i0a i0b i1a i1b a0 b0 a1 b1
    # Idle window of the same length: what the control plane (keep-alives, timers, these status
    # queries) allocates without traffic, so that the rest is what traffic costs.
    i0a=$($vnet status --json --socket /tmp/$P-a.sock); i0b=$($vnet status --json --socket /tmp/$P-b.sock)
    sleep 10
    i1a=$($vnet status --json --socket /tmp/$P-a.sock); i1b=$($vnet status --json --socket /tmp/$P-b.sock)
    a0=$($vnet status --json --socket /tmp/$P-a.sock); b0=$($vnet status --json --socket /tmp/$P-b.sock)
    ip netns exec ${P}va iperf3 -c 10.9.0.2 -t 10 -P 2 >/dev/null
    a1=$($vnet status --json --socket /tmp/$P-a.sock); b1=$($vnet status --json --socket /tmp/$P-b.sock)
    python3 - "$transport" "$a0" "$a1" "$b0" "$b1" "$i0a" "$i1a" "$i0b" "$i1b" <<'PY'
import json, sys
t = sys.argv[1]
for name, x0, x1, y0, y1 in (("proxy", sys.argv[2], sys.argv[3], sys.argv[6], sys.argv[7]),
                             ("host", sys.argv[4], sys.argv[5], sys.argv[8], sys.argv[9])):
    s0, s1 = json.loads(x0), json.loads(x1)
    idle = json.loads(y1)["allocatedBytes"] - json.loads(y0)["allocatedBytes"]
    frames = s1["forwardedFrames"] - s0["forwardedFrames"]
    alloc = s1["allocatedBytes"] - s0["allocatedBytes"]
    gc = s1["gen0Collections"] - s0["gen0Collections"]
    grown = s1["buffersCreated"] - s0["buffersCreated"]
    # A pool buffer is a 66 624-byte pinned array plus its header: growth of the pool to the
    # working set, not a per-frame cost.
    growth = grown * (66624 + 24)
    extra = alloc - idle - growth
    print(f"{t} link, {name}: {frames} frames in 10 s; allocated {alloc} B under load "
          f"({growth} B of it pool growth: {grown} buffers), {idle} B in 10 s idle; "
          f"per frame beyond both: {extra / max(frames, 1):.4f} B; {gc} gen0 GCs")
PY
}
measure tcp
measure udp
