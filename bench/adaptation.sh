#!/usr/bin/env bash
# Adaptation benchmark: the star through a far-away Proxy against an overlay VNET adapts itself.
#
# A Proxy and N hosts (one VM each) in network namespaces. Every path to the Proxy is slow, as when
# the user's home LAN is far from the sites: VNET's link emulation imposes 20 ms each way and
# 50 Mbit/s on the star links; links between hosts (the ones adaptation adds) get 5 ms and
# 200 Mbit/s. For each BSP pattern (vnet patterns, one rank per VM) the completion time of R rounds
# is measured with adaptation off (everything through the Proxy) and with adaptation auto:
#   cold: the policy is auto from the start; the time includes the rounds that run over the star
#         while VTTIF infers the topology and the Proxy adds links;
#   warm: the same run again, right after, with the adapted overlay in place.
# Usage (root): bench/adaptation.sh [--hosts 4] [--rounds 20] [--bytes 1M] [--patterns all-to-all,ring,neighbor-mesh]
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
hosts=4 rounds=20 bytes=1M patterns=all-to-all,ring,neighbor-mesh
while [ $# -gt 0 ]; do
    case $1 in
        --hosts) hosts=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --bytes) bytes=$2; shift 2 ;;
        --patterns) patterns=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }

out="$repo/artifacts/bench-vnet"
dotnet publish "$repo/src/Vnet.Cli" -c Release -o "$out" -nologo -clp:ErrorsOnly >/dev/null
vnet="dotnet $out/vnet.dll"
P=vad
run=/tmp/vnet-adapt-bench
STAR="delay=20ms,rate=50mbit"
DIRECT="delay=5ms,rate=200mbit"

cleanup() {
    for f in "$run"/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    sleep 0.5
    for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns"
    done
}
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap - EXIT
cleanup
rm -rf "$run"; mkdir -p "$run"

ns() { ip netns exec "$P-$1" "${@:2}"; }
veth() { ip -n "$P-$1" link add "$2" type veth peer name "$4" netns "$P-$3"; ip -n "$P-$1" link set "$2" up; ip -n "$P-$3" link set "$4" up; }
cli() { local d=$1; shift; $vnet "$@" --socket "$run/$d.sock"; }

names="wan proxy"
for i in $(seq 1 "$hosts"); do names="$names h$i vm$i"; done
for n in $names; do
    ip netns add "$P-$n"; ip -n "$P-$n" link set lo up
    ip netns exec "$P-$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
ip -n $P-wan link add br0 type bridge; ip -n $P-wan link set br0 up
veth proxy wan0 wan p; ip -n $P-wan link set p master br0; ip -n $P-proxy addr add 192.0.2.1/24 dev wan0
# A key pair per daemon (files only root reads); the Proxy admits the hosts', the hosts pin the Proxy's.
for name in proxy $(seq -f 'h%g' 1 "$hosts"); do $vnet keygen -o "$run/$name.key" >/dev/null; done
pub() { $vnet pubkey <"$run/$1.key"; }
admits=()
for i in $(seq 1 "$hosts"); do admits+=(--admit "h$i=$(pub "h$i")"); done
start() {
    local name=$1; shift
    ip netns exec "$P-$name" setsid $vnet daemon --name "$name" --key-file "$run/$name.key" --control-socket "$run/$name.sock" --log-level warning "$@" \
        >"$run/$name.log" 2>&1 </dev/null &
    echo $! >"$run/$name.pid"
}
start proxy --role proxy --listen 192.0.2.1:5500 "${admits[@]}"
peers=""
for i in $(seq 1 "$hosts"); do
    veth "h$i" wan0 wan "h$i"; ip -n $P-wan link set "h$i" master br0; ip -n "$P-h$i" addr add "192.0.2.$((10 + i))/24" dev wan0
    ip -n "$P-h$i" link add br0 type bridge; ip -n "$P-h$i" link set br0 up
    start "h$i" --role host --listen "192.0.2.$((10 + i)):5500" --proxy 192.0.2.1:5500 --proxy-key "$(pub proxy)" --transport udp --tap tap0
    peers="$peers${peers:+,}10.50.0.$((10 + i)):7000"
done
for i in $(seq 1 100); do
    ok=1; for d in proxy $(seq -f "h%g" 1 "$hosts"); do [ -S "$run/$d.sock" ] || ok=0; done
    [ $ok = 1 ] && break; sleep 0.2
done
for i in $(seq 1 "$hosts"); do
    for t in $(seq 1 50); do ip -n "$P-h$i" link show tap0 >/dev/null 2>&1 && break; sleep 0.1; done
    ip -n "$P-h$i" link set tap0 master br0
    veth "vm$i" eth0 "h$i" "vm$i"; ip -n "$P-h$i" link set "vm$i" master br0
    ip -n "$P-vm$i" link set eth0 address "02:00:00:00:00:$(printf %02x "$i")"
    ip -n "$P-vm$i" addr add "10.50.0.$((10 + i))/24" dev eth0
done
# The far-away Proxy and the faster host-to-host paths.
cli proxy link emulate '*' "$STAR" >/dev/null
for i in $(seq 1 "$hosts"); do
    cli "h$i" link emulate proxy "$STAR" >/dev/null
    cli "h$i" link emulate '*' "$DIRECT" >/dev/null
done
sleep 2
for i in $(seq 2 "$hosts"); do ns vm1 ping -c 1 -W 2 "10.50.0.$((10 + i))" >/dev/null; done

# Runs one pattern among all VMs; prints rank 0's total seconds.
pattern() {
    local kind=$1 r
    for r in $(seq 1 "$((hosts - 1))"); do
        ns "vm$((r + 1))" $vnet patterns --pattern "$kind" --peers "$peers" --rank "$r" --bytes "$bytes" --rounds "$rounds" \
            >"$run/rank$r.txt" 2>&1 &
    done
    ns vm1 $vnet patterns --pattern "$kind" --peers "$peers" --rank 0 --bytes "$bytes" --rounds "$rounds" --json >"$run/rank0.json" 2>"$run/rank0.err"
    wait
    python3 -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["totalSeconds"])' "$run/rank0.json"
}

links_of_adaptation() { cli proxy adapt status --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["links"]))'; }

edges_inferred() { cli proxy vttif topology --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["edges"]))'; }

# Back to the plain star, and wait until the inferred topology has emptied (the matrix decays to
# under VTTIF's absolute floor), so that a cold run really starts from nothing.
settle_off() {
    cli proxy adapt policy off >/dev/null
    for t in $(seq 1 60); do [ "$(links_of_adaptation)" = 0 ] && break; sleep 0.5; done
    for t in $(seq 1 120); do [ "$(edges_inferred)" = 0 ] && break; sleep 0.5; done
}

printf '\n| pattern | rounds × bytes | off (star) s | auto, cold s | auto, warm s | speed-up cold | speed-up warm |\n|---|---|---:|---:|---:|---:|---:|\n'
for kind in ${patterns//,/ }; do
    settle_off
    off=$(pattern "$kind")
    settle_off
    cli proxy adapt policy auto --budget "$((hosts - 1))" >/dev/null
    cold=$(pattern "$kind")
    warm=$(pattern "$kind")
    made=$(links_of_adaptation)
    printf '| %s | %s × %s | %s | %s | %s | %.1f× | %.1f× |\n' "$kind" "$rounds" "$bytes" "$off" "$cold" "$warm" \
        "$(python3 -c "print($off/$cold)")" "$(python3 -c "print($off/$warm)")"
    echo "  ($made link(s) added by adaptation for $kind)" >&2
done
echo
echo "hosts: $hosts, one VM each; star links $STAR, host-to-host $DIRECT; adaptation budget $((hosts - 1))"
cli proxy adapt status | tail -n 12 >&2
