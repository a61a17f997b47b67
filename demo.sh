#!/usr/bin/env bash
# VNET's main job, on one machine: a Proxy on a "home LAN", three hosts at other "sites", four VMs.
# Every site and VM is a network namespace; daemons are real `vnet daemon` processes.
# Usage: sudo ./demo.sh        (about a minute; removes everything it made when it ends)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

[ "$(id -u)" = 0 ] || { echo "demo.sh needs root (network namespaces, TAP devices): sudo ./demo.sh"; exit 1; }
need=()
for pkg in libpcap0.8:/usr/lib/x86_64-linux-gnu/libpcap.so.0.8 iperf3:/usr/bin/iperf3 iputils-ping:/usr/bin/ping; do
    [ -e "${pkg#*:}" ] || need+=("${pkg%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi

out=artifacts/demo
echo "building vnet ..."
dotnet publish src/Vnet.Cli -c Release -o "$out" -nologo -clp:ErrorsOnly >/dev/null
VNET="dotnet $out/vnet.dll"
run=/tmp/vnet-demo
P=vdemo
rm -rf "$run"; mkdir -p "$run"

cleanup() {
    for pidfile in "$run"/*.pid; do [ -e "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true; done
    sleep 0.5
    for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; ip netns del "$ns"; done
}
trap cleanup EXIT
cleanup

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }
vnet() { local d=$1; shift; printf '\033[2m$ vnet %s   (at %s)\033[0m\n' "$*" "$d"; $VNET "$@" --socket "$run/$d.sock"; }
ns() { ip netns exec "$P-$1" "${@:2}"; }

say "Building the sites: a WAN, a home LAN with one machine, a Proxy, hosts h1 h2 h3"
for n in wan lan lanhost proxy h1 h2 h3 vm1 vm2 vm3 vm4; do
    ip netns add "$P-$n"; ip -n "$P-$n" link set lo up
    ip netns exec "$P-$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
done
ip -n $P-wan link add br0 type bridge; ip -n $P-wan link set br0 up
ip -n $P-lan link add br0 type bridge; ip -n $P-lan link set br0 up
veth() { ip -n "$P-$1" link add "$2" type veth peer name "$4" netns "$P-$3"; ip -n "$P-$1" link set "$2" up; ip -n "$P-$3" link set "$4" up; }
veth lanhost eth0 lan lh; ip -n $P-lan link set lh master br0
ip -n $P-lanhost addr add 10.50.0.1/24 dev eth0
veth proxy wan0 wan p; ip -n $P-wan link set p master br0; ip -n $P-proxy addr add 192.0.2.1/24 dev wan0
veth proxy lan0 lan px; ip -n $P-lan link set px master br0
for i in 1 2 3; do
    veth h$i wan0 wan h$i; ip -n $P-wan link set h$i master br0; ip -n $P-h$i addr add 192.0.2.1$i/24 dev wan0
    ip -n $P-h$i link add br0 type bridge; ip -n $P-h$i link set br0 up
done

# Every daemon has its own key pair (private key in a file only root reads); the Proxy admits each
# host's public key, and each host pins the Proxy's. No key ever goes on a command line.
for d in proxy h1 h2 h3; do $VNET keygen -o "$run/$d.key" >/dev/null; done
pub() { $VNET pubkey < "$run/$1.key"; }
daemon() { # name args...
    local name=$1; shift
    ip netns exec "$P-$name" setsid $VNET daemon --name "$name" --key-file "$run/$name.key" --control-socket "$run/$name.sock" --log-level information "$@" \
        >"$run/$name.log" 2>&1 < /dev/null &
    echo $! > "$run/$name.pid"
}
say "Starting the Proxy (its NIC lan0 on the home LAN, captured through a packet socket) and three host daemons"
daemon proxy --role proxy --listen 192.0.2.1:5500 --pcap lan0 --admit "h1=$(pub h1)" --admit "h2=$(pub h2)" --admit "h3=$(pub h3)"
for i in 1 2 3; do
    transport=tcp; [ $i = 3 ] && transport=udp
    daemon h$i --role host --listen 192.0.2.1$i:5500 --proxy 192.0.2.1:5500 --proxy-key "$(pub proxy)" --transport $transport --tap tap0
done
for i in $(seq 1 100); do
    ok=1; for d in proxy h1 h2 h3; do [ -S "$run/$d.sock" ] || ok=0; done
    for i2 in 1 2 3; do ip -n $P-h$i2 link show tap0 >/dev/null 2>&1 || ok=0; done
    [ $ok = 1 ] && break; sleep 0.2
done
for i in 1 2 3; do ip -n $P-h$i link set tap0 master br0; done
sleep 1
vnet proxy show links

say "Four VMs: vm1 on h1, vm2 on h2, vm3 and vm4 on h3; they keep their LAN addresses (10.50.0.x)"
vm() { # n host
    veth vm$1 eth0 h$2 vm$1; ip -n $P-h$2 link set vm$1 master br0
    ip -n $P-vm$1 link set eth0 address 02:00:00:00:00:0$1; ip -n $P-vm$1 addr add 10.50.0.1$1/24 dev eth0
}
vm 1 1; vm 2 2; vm 3 3; vm 4 3

say "The VMs sit on the home LAN: they ping each other and the LAN machine, through the Proxy"
show ns vm1 ping -c 2 -i 0.2 -w 15 10.50.0.12 | tail -1
show ns vm2 ping -c 2 -i 0.2 -w 15 10.50.0.13 | tail -1
show ns vm3 ping -c 2 -i 0.2 -w 15 10.50.0.1 | tail -1
show ns lanhost ping -c 2 -i 0.2 -w 15 10.50.0.14 | tail -1
vnet proxy vms
vnet proxy rule list

say "Throughput vm1 -> vm2 through the star (h1 -TCP-> Proxy -TCP-> h2), 3 seconds"
ns vm2 iperf3 -s -1 -D
sleep 0.3
show ns vm1 iperf3 -c 10.50.0.12 -t 3 -f g | grep -E "sender|receiver"

say "The Proxy saw that traffic: its VM×VM matrix and the topology it infers (VTTIF)"
vnet proxy vttif matrix

say "The live overlay as a description in VNET's language, and a frame traced hop by hop"
vnet proxy topo dump
vnet proxy trace --from h1 --src 02:00:00:00:00:01 --dst 02:00:00:00:00:02

say "A direct link h1 <-> h2 and two rules move that traffic off the Proxy"
vnet h1 link add h2 192.0.2.12:5500 --transport udp
sleep 1
vnet h1 rule add --src any --dst 02:00:00:00:00:02 --to link:h2
vnet h2 rule add --src any --dst 02:00:00:00:00:01 --to link:h1
before=$($VNET link list --json --socket "$run/proxy.sock" | grep -o '"rxFrames": [0-9]*' | awk '{s+=$2} END {print s}')
ns vm2 iperf3 -s -1 -D; sleep 0.3
show ns vm1 iperf3 -c 10.50.0.12 -t 3 -f g | grep -E "sender|receiver"
after=$($VNET link list --json --socket "$run/proxy.sock" | grep -o '"rxFrames": [0-9]*' | awk '{s+=$2} END {print s}')
echo "frames the Proxy received during that transfer: $((after - before))"
vnet h1 rule list

say "Live migration: vm4 moves from h3 to h1 while it pings vm1; it keeps MAC, IP and the ping"
ns vm4 ping -c 30 -i 0.1 10.50.0.11 > "$run/migration-ping.txt" 2>&1 &
pinger=$!
sleep 1
show ip -n $P-h3 link set vm4 netns $P-h1
ip -n $P-h1 link set vm4 master br0; ip -n $P-h1 link set vm4 up
wait $pinger || true
tail -2 "$run/migration-ping.txt"
vnet proxy vms

say "Adaptation: the Proxy adds a direct link for VMs that talk a lot (vm1 on h1 -> vm3 on h3)"
vnet proxy adapt policy auto
ns vm3 iperf3 -s -1 -D; sleep 0.3
ns vm1 iperf3 -c 10.50.0.13 -t 9 -f g > "$run/adapt-iperf.txt" &
iperfpid=$!
sleep 8
vnet proxy adapt status
wait $iperfpid || true
grep -E "receiver" "$run/adapt-iperf.txt" || true

say "Counters: who carried what"
vnet proxy status
vnet h1 show links

say "Done. Logs: $run/*.log. Everything is removed now."
