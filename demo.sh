#!/usr/bin/env bash
# VNET's main job, on one machine: a Proxy on a "home LAN", three hosts at other "sites", four VMs,
# and the web front where you watch the overlay, order VMs and move them.
# Every site and VM is a network namespace; daemons are real `vnet daemon` processes.
#
# Usage: sudo ./demo.sh          starts the overlay, prints the web front's URL, shows VNET at work
#                                (about a minute), then keeps a traffic pattern running until Ctrl-C
#        sudo ./demo.sh --once   the same tour, then stops by itself
# Ctrl-C (or the end of --once) stops every process and removes every namespace, interface and file
# the demo made (the built program stays in artifacts/demo). Set VNET_DEMO_KEEP_LOGS=1 to keep the
# daemons' logs in /tmp/vnet-demo-logs.
#
# For tests: VNET_DEMO_BIN=DIR uses an already published vnet (DIR/vnet.dll) instead of building;
# VNET_DEMO_PREFIX (default vdemo) names the namespaces and files; VNET_DEMO_WEBNET (default
# 169.254.77) is the /30 that joins this machine to the Proxy's web front.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

once=0
for arg in "$@"; do
    case $arg in
        --once) once=1 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo.sh: unknown argument '$arg' (try --help)"; exit 2 ;;
    esac
done

[ "$(id -u)" = 0 ] || { echo "demo.sh needs root (network namespaces, TAP devices): sudo ./demo.sh"; exit 1; }
need=()
for pkg in libpcap0.8:/usr/lib/x86_64-linux-gnu/libpcap.so.0.8 iperf3:/usr/bin/iperf3 iputils-ping:/usr/bin/ping \
           dnsmasq-base:/usr/sbin/dnsmasq udhcpc:/sbin/udhcpc iputils-arping:/usr/bin/arping; do
    [ -e "${pkg#*:}" ] || need+=("${pkg%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi

P=${VNET_DEMO_PREFIX:-vdemo}
webnet=${VNET_DEMO_WEBNET:-169.254.77}
run=/tmp/vnet-$P
if [ -n "${VNET_DEMO_BIN:-}" ]; then
    out=$VNET_DEMO_BIN
else
    out=artifacts/demo
    echo "building vnet ..."
    dotnet publish src/Vnet.Cli -c Release -o "$out" -nologo -clp:ErrorsOnly >/dev/null
fi
VNET="dotnet $out/vnet.dll"

cleaned=0
cleanup() {
    [ $cleaned = 1 ] && return; cleaned=1
    # The pattern's loop first, so that it starts nothing new (the daemons are jobs too: they get SIGTERM below).
    [ -n "${pattern_loop:-}" ] && kill -9 "$pattern_loop" 2>/dev/null || true
    # SIGTERM: a host daemon ends the VMs it made (their namespaces' holder processes, QEMU) as it stops.
    local pids=() pidfile
    for pidfile in "$run"/*.pid; do [ -e "$pidfile" ] && pids+=("$(cat "$pidfile")"); done
    [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 50); do
        local alive=0 pid; for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break; sleep 0.2
    done
    for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true
    done
    ip link del "$P-web" 2>/dev/null || true
    rmdir /run/vnet-vms 2>/dev/null || true
    if [ "${VNET_DEMO_KEEP_LOGS:-0}" = 1 ] && [ -d "$run" ]; then
        mkdir -p /tmp/vnet-demo-logs && cp "$run"/*.log /tmp/vnet-demo-logs/ 2>/dev/null || true
    fi
    rm -rf "$run"
}
trap cleanup EXIT
trap 'trap "" INT TERM; echo; echo "stopping: removing every process, namespace and file of the demo ..."; cleanup; echo "done."; exit 130' INT TERM
cleanup; cleaned=0
mkdir -p "$run/tmp"; chmod 700 "$run"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }
vnet() { local d=$1; shift; printf '\033[2m$ vnet %s   (at %s)\033[0m\n' "$*" "$d"; $VNET "$@" --socket "$run/$d.sock"; }
ns() { ip netns exec "$P-$1" "${@:2}"; }

# --- The sites ---------------------------------------------------------------------------------
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
# This machine reaches the Proxy's web front over one veth pair ($P-web, a link-local /30).
ip link add "$P-web" type veth peer name web0 netns "$P-proxy"
ip addr add "$webnet.1/30" dev "$P-web"; ip link set "$P-web" up
ip -n $P-proxy addr add "$webnet.2/30" dev web0; ip -n $P-proxy link set web0 up
# The home LAN's DHCP server: ordered VMs lease their addresses from it, through the Proxy.
ip netns exec $P-lanhost setsid dnsmasq --no-daemon --conf-file=/dev/null --port=0 --user=root --interface=eth0 --bind-interfaces \
    --dhcp-range=10.50.0.100,10.50.0.150,255.255.255.0,1h --no-ping --dhcp-leasefile="$run/leases" >"$run/dnsmasq.log" 2>&1 </dev/null &
echo $! > "$run/dnsmasq.pid"

# Every daemon has its own key pair (private key in a file only root reads); the Proxy admits each
# host's public key, and each host pins the Proxy's. No key or token ever goes on a command line.
for d in proxy h1 h2 h3; do $VNET keygen -o "$run/$d.key" >/dev/null; done
pub() { $VNET pubkey < "$run/$1.key"; }
head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' > "$run/web.token"; chmod 600 "$run/web.token"
daemon() { # name args...
    local name=$1; shift
    ip netns exec "$P-$name" env TMPDIR="$run/tmp" setsid $VNET daemon --name "$name" --key-file "$run/$name.key" --control-socket "$run/$name.sock" --log-level information "$@" \
        >"$run/$name.log" 2>&1 < /dev/null &
    echo $! > "$run/$name.pid"
}
daemon proxy --role proxy --listen 192.0.2.1:5500 --pcap lan0 --admit "h1=$(pub h1)" --admit "h2=$(pub h2)" --admit "h3=$(pub h3)" \
    --web "$webnet.2:8080" --web-token-file "$run/web.token"
for i in 1 2 3; do
    transport=tcp; [ $i = 3 ] && transport=udp
    daemon h$i --role host --listen 192.0.2.1$i:5500 --proxy 192.0.2.1:5500 --proxy-key "$(pub proxy)" --transport $transport --tap tap0 \
        --vm-provider netns
done
for i in $(seq 1 150); do
    ok=1; for d in proxy h1 h2 h3; do [ -S "$run/$d.sock" ] || ok=0; done
    for i2 in 1 2 3; do ip -n $P-h$i2 link show tap0 >/dev/null 2>&1 || ok=0; done
    [ $ok = 1 ] && break; sleep 0.2
done
[ $ok = 1 ] || { echo "the daemons did not start; their logs:"; tail -n 20 "$run"/*.log; exit 1; }
for i in 1 2 3; do ip -n $P-h$i link set tap0 master br0; done

printf '\n\033[1mWeb front: http://%s.2:8080/?token=%s\033[0m\n' "$webnet" "$(cat "$run/web.token")"
echo "(open it now: the overlay graph, traffic heat map, rules and VMs update live while the demo runs)"

# --- The tour ----------------------------------------------------------------------------------
say "A Proxy on the home LAN (its NIC captured through a packet socket), hosts h1 h2 h3 dialled in"
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

say "Ordering a VM, as the web front's VMs page does: it is made on h2 and leases its address from the LAN"
vnet proxy vm order --site h2 --size small --name web1 || echo "(the order was refused: the demo goes on without web1)"
for i in $(seq 1 60); do
    addr=$($VNET vms --socket "$run/proxy.sock" 2>/dev/null | grep -w web1 | grep -oE '10\.50\.0\.[0-9]+' | head -1 || true)
    [ -n "$addr" ] && break; sleep 0.5
done
vnet proxy vms
if [ -n "${addr:-}" ]; then
    say "Moving web1 from h2 to h3 while the LAN machine pings it: same MAC, same address, no lost session"
    ns lanhost ping -c 25 -i 0.1 "$addr" > "$run/move-ping.txt" 2>&1 &
    pinger=$!
    sleep 0.5
    vnet proxy vm move web1 --to h3
    wait $pinger || true
    tail -2 "$run/move-ping.txt"
fi

say "Throughput vm1 -> vm2 through the star (h1 -TCP-> Proxy -TCP-> h2), 3 seconds"
ns vm2 iperf3 -s -1 -D
sleep 0.3
show ns vm1 iperf3 -c 10.50.0.12 -t 3 -f g | grep -E "sender|receiver"

say "The live overlay as a description in VNET's language, and a frame traced hop by hop"
vnet proxy topo dump
vnet proxy trace --from h1 --src 02:00:00:00:00:01 --dst 02:00:00:00:00:02

say "Live migration: vm4 moves from h3 to h1 while it pings vm1; it keeps MAC, IP and the ping"
ns vm4 ping -c 30 -i 0.1 10.50.0.11 > "$run/migration-ping.txt" 2>&1 &
pinger=$!
sleep 1
show ip -n $P-h3 link set vm4 netns $P-h1
ip -n $P-h1 link set vm4 master br0; ip -n $P-h1 link set vm4 up
wait $pinger || true
tail -2 "$run/migration-ping.txt"

say "A traffic pattern (neighbor-mesh among the four VMs, in rounds) and adaptation in auto mode:"
echo "VTTIF infers who talks to whom; the Proxy adds direct links between those hosts (watch the web front)"
vnet proxy adapt policy auto
pattern() { # one rank per VM, again and again until the demo stops
    local peers=10.50.0.11:7000,10.50.0.12:7000,10.50.0.13:7000,10.50.0.14:7000
    while [ -d "$run" ] && kill -0 $$ 2>/dev/null; do
        for r in 0 1 2 3; do
            ns vm$((r + 1)) $VNET patterns --pattern neighbor-mesh --peers $peers --rank $r --bytes 4M --rounds 30 \
                --connect-timeout 10 --round-timeout 20 >>"$run/pattern.log" 2>&1 &
        done
        wait
        sleep 1
    done
}
pattern &
pattern_loop=$!
# Not a job of this shell: the cleanup's kill -9 of it then prints no "Killed" line.
disown "$pattern_loop"
for i in $(seq 1 40); do
    links=$($VNET link list --json --socket "$run/h1.sock" 2>/dev/null | grep -c '"peer"' || true)
    [ "${links:-0}" -gt 1 ] && break; sleep 1
done
vnet proxy adapt status
vnet h1 show links

say "Counters: who carried what"
vnet proxy status

if [ $once = 1 ]; then
    say "Done (--once). Everything is removed now."
    exit 0
fi
printf '\n\033[1mVNET demo is running: web front at http://%s.2:8080/?token=%s ; Ctrl-C stops it and removes everything.\033[0m\n' "$webnet" "$(cat "$run/web.token")"
while true; do sleep 1; done
