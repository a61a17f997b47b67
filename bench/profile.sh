#!/usr/bin/env bash
# Profiles the two daemons of one VNET link while a VM sends one TCP stream to another (or pings
# it, or floods it with small UDP packets), and keeps the profile: a flame graph (SVG) and the
# functions with the most samples, per daemon, under --out (docs/perf/ for the ones we keep).
#
#   [pf-vmA] eth0 ==veth== vethA -[brA]- tapA (daemon a, the Proxy)   [pf-hostA] physA 192.0.2.1
#                                                                         ||  veth, MTU 1500
#   [pf-vmB] eth0 ==veth== vethB -[brB]- tapB (daemon b, a host)      [pf-hostB] physB 192.0.2.2
#
# As in the peer benchmark: VM MTU 1360, the VMs' offloads left at their defaults, each daemon
# with its own key pair. perf samples both daemons (cpu-clock, call graphs by frame pointers; the
# JIT writes /tmp/perf-PID.map so managed frames have names; see below) for --seconds in the middle of the test.
#
# --transport vxlan puts kernel VXLAN devices where the TAPs are and runs the same load without
# daemons or perf: the reference for the same test (udp64's loss by stage, below), side by side.
#
# Usage (root): bench/profile.sh [--transport udp|tcp|vxlan] [--test tcp|tcp4|ping|udp64|idle] [--seconds 8]
#                                [--out DIR] [--vnet DIR (a dotnet publish of src/Vnet.Cli)]
#                                [--ns PREFIX (namespaces PREFIX-vmA...; default pf)]
#                                [--settle S (seconds between the VMs' first ping and the recording; default 3)]
#                                [--rate R (tcp test: iperf3 -b R)] [--no-perf] [--pin CPUS]
# An idle daemon's first minutes are not its steady state: the runtime re-compiles the methods run
# once a second when they have run 30 and 60 times, and the VMs' kernels send their start-up
# chatter (IPv6 router solicitations, MLD); --settle 90 measures after most of it.
# --rate R paces the TCP test's sender (iperf3 -b R, e.g. 2G): the cost of a fixed load, cores per
# Gbit/s, which a saturated machine cannot show. --no-perf measures without perf (its sampling
# costs the daemons a few percent and the ping test tens of microseconds); the CPU figures then
# come from /proc only. --pin CPUS puts both daemons and the load's process on those CPUs
# (taskset), to tell the cost of wake-ups across CPUs from the work. Every run prints the whole
# machine's busy share over the window (from /proc/stat), whatever the transport.
# It refuses to start when its namespaces exist (another run's, or one left behind: delete them
# with ip netns del only if they are yours), and measures the daemons it started, by process id.
set -euo pipefail

repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
transport=udp test=tcp seconds=8 out="" vnet_dir="" ns=pf settle=3 rate="" use_perf=yes pin=""
while [ $# -gt 0 ]; do
    case $1 in
        --transport) transport=$2; shift 2 ;;
        --test) test=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --vnet) vnet_dir=$2; shift 2 ;;
        --ns) ns=$2; shift 2 ;;
        --settle) settle=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --no-perf) use_perf=no; shift ;;
        --pin) pin=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run as root (namespaces, perf)" >&2; exit 2; }
[ "$use_perf" = no ] || command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 2; }
out=${out:-"$repo/artifacts/profile-$transport-$test-$(date +%Y%m%d-%H%M%S)"}
mkdir -p "$out"
if [ -z "$vnet_dir" ] && [ "$transport" != vxlan ]; then
    vnet_dir="$repo/artifacts/profile-vnet"
    dotnet publish "$repo/src/Vnet.Cli" -c Release -o "$vnet_dir" -nologo -clp:ErrorsOnly >/dev/null
fi
vnet="dotnet $vnet_dir/vnet.dll"
work=$(mktemp -d /tmp/vnet-profile.XXXXXX)
pids=()
made=no

cleanup() {
    [ -f "$work/iperf3.pid" ] && kill "$(cat "$work/iperf3.pid")" 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 30); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.1; done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    if [ "$made" = yes ]; then
        for n in "${ns}-vmA" "${ns}-vmB" "${ns}-hostA" "${ns}-hostB"; do ip netns del "$n" 2>/dev/null || true; done
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

for n in "${ns}-vmA" "${ns}-vmB" "${ns}-hostA" "${ns}-hostB"; do
    if ip netns list | grep -qw "$n"; then echo "namespace $n exists (another run?): pick another --ns" >&2; exit 2; fi
done
made=yes
for n in "${ns}-vmA" "${ns}-vmB" "${ns}-hostA" "${ns}-hostB"; do ip netns add "$n"; done
ip link add physA netns ${ns}-hostA type veth peer name physB netns ${ns}-hostB
ip -n ${ns}-hostA addr add 192.0.2.1/24 dev physA
ip -n ${ns}-hostB addr add 192.0.2.2/24 dev physB
for s in A B; do
    h=${ns}-host$s v=${ns}-vm$s
    ip -n "$h" link set lo up
    ip -n "$h" link set "phys$s" up
    ip -n "$h" link add "br$s" type bridge
    ip -n "$h" link set "br$s" up
    ip link add eth0 netns "$v" type veth peer name "veth$s" netns "$h"
    ip -n "$h" link set "veth$s" master "br$s" up
    ip -n "$v" link set lo up
    ip -n "$v" link set eth0 mtu 1360 up
done
ip -n ${ns}-vmA link set eth0 address 02:00:00:99:00:01
ip -n ${ns}-vmB link set eth0 address 02:00:00:99:00:02
ip -n ${ns}-vmA addr add 10.99.0.1/24 dev eth0
ip -n ${ns}-vmB addr add 10.99.0.2/24 dev eth0

declare -A daemon_pid
if [ "$transport" = vxlan ]; then
    devA=vxA devB=vxB
    ip -n ${ns}-hostA link add vxA type vxlan id 42 local 192.0.2.1 remote 192.0.2.2 dstport 4789
    ip -n ${ns}-hostB link add vxB type vxlan id 42 local 192.0.2.2 remote 192.0.2.1 dstport 4789
else
devA=tapA devB=tapB
# Keys in files only root reads; never on a command line.
$vnet keygen -o "$work/a.key" >/dev/null
$vnet keygen -o "$work/b.key" >/dev/null
# Managed frames get names from the JIT's perf map; W^X double-mapping hides JIT code from perf
# (a memfd mapping, not anonymous memory), and ReadyToRun code (the framework's) has no map
# entries, so both are off while profiling: the framework's code is then JIT-compiled too.
export DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0 DOTNET_ReadyToRun=0
ip netns exec ${ns}-hostA $vnet daemon --name a --role proxy --listen 192.0.2.1:5500 --key-file "$work/a.key" \
    --admit "b=$($vnet pubkey <"$work/b.key")" --tap tapA --lan tapA --mtu 1360 \
    --control-socket "$work/a.sock" --log-level warning >"$out/daemon-a.log" 2>&1 &
pids+=($!)
daemon_pid[a]=$!
ip netns exec ${ns}-hostB $vnet daemon --name b --role host --listen 192.0.2.2:5500 --key-file "$work/b.key" \
    --proxy-key "$($vnet pubkey <"$work/a.key")" --proxy 192.0.2.1:5500 --proxy-name a --transport "$transport" \
    --tap tapB --mtu 1360 --control-socket "$work/b.sock" --log-level warning >"$out/daemon-b.log" 2>&1 &
pids+=($!)
daemon_pid[b]=$!
fi
for s in A B; do
    dev=dev$s; dev=${!dev}
    for _ in $(seq 100); do ip -n "${ns}-host$s" link show "$dev" >/dev/null 2>&1 && break; sleep 0.1; done
    mtu=1500; [ "$transport" = vxlan ] && mtu=1450   # VXLAN's 50 bytes inside the underlay's 1500
    ip -n "${ns}-host$s" link set "$dev" mtu $mtu master "br$s" up
done
# ping stops at its first "unreachable" (ARP unanswered while the daemons start): one try a second.
ready=no
for _ in $(seq 90); do
    ip netns exec ${ns}-vmA ping -c 1 -W 1 10.99.0.2 >/dev/null 2>&1 && { ready=yes; break; }
    sleep 1
done
[ $ready = yes ] || { echo "the VMs never reached each other" >&2; exit 1; }

if [ "$test" != idle ] && [ "$test" != ping ]; then
    ip netns exec ${ns}-vmB iperf3 -s -D -1 -I "$work/iperf3.pid" >/dev/null
    sleep 0.3
fi
span=$((settle + seconds + 3))
case $test in
    tcp)   load=(iperf3 -c 10.99.0.2 -t $span ${rate:+-b "$rate"}) ;;
    tcp4)  load=(iperf3 -c 10.99.0.2 -t $span -P 4) ;;
    udp64) load=(iperf3 -c 10.99.0.2 -t $span -u -l 64 -b 1G) ;;
    ping)  load=(ping -c $((span * 50)) -i 0.02 10.99.0.2) ;;
    idle)  load=(sleep $span) ;;
    *) echo "unknown test $test" >&2; exit 2 ;;
esac
# Where small packets are lost (udp64): the counters of each stage, before the load and after it.
# vmA's UDP sends; tapA: frames the daemon read (TX) and the TAP's ring full (TX dropped); hostB:
# the link's datagrams received and refused for a full socket buffer; tapB: frames daemon b wrote;
# vmB: datagrams the receiving iperf3's socket took and those refused for a full buffer.
udp_counter() { ip netns exec "$1" nstat -az "$2" 2>/dev/null | awk -v k="$2" '$1 == k {print $2}'; }
stage_counters() {
    echo "vmA_udp_out $(udp_counter ${ns}-vmA UdpOutDatagrams)"
    echo "tapA_read $(ip netns exec ${ns}-hostA cat /sys/class/net/$devA/statistics/tx_packets)"
    echo "tapA_ring_full $(ip netns exec ${ns}-hostA cat /sys/class/net/$devA/statistics/tx_dropped)"
    echo "hostB_link_in $(udp_counter ${ns}-hostB UdpInDatagrams)"
    echo "hostB_link_rcvbuf $(udp_counter ${ns}-hostB UdpRcvbufErrors)"
    echo "tapB_written $(ip netns exec ${ns}-hostB cat /sys/class/net/$devB/statistics/rx_packets)"
    echo "tapB_dropped $(ip netns exec ${ns}-hostB cat /sys/class/net/$devB/statistics/rx_dropped)"
    echo "vmB_udp_in $(udp_counter ${ns}-vmB UdpInDatagrams)"
    echo "vmB_rcvbuf $(udp_counter ${ns}-vmB UdpRcvbufErrors)"
    local d=0 x
    for x in $(awk '{print $2}' /proc/net/softnet_stat); do d=$((d + 16#$x)); done
    echo "backlog_dropped $d"
}
[ "$test" = udp64 ] && stage_counters >"$work/stages-before"
if [ -n "$pin" ]; then
    load=(taskset -c "$pin" "${load[@]}")
    [ "$transport" = vxlan ] || for name in a b; do taskset -a -p -c "$pin" "${daemon_pid[$name]}" >/dev/null; done
fi
ip netns exec ${ns}-vmA "${load[@]}" >"$out/load.txt" 2>&1 &
load_pid=$!
sleep "$settle"
# The whole machine's busy share over the window (user, nice, system, irq, softirq of all CPUs).
machine_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat; }
read -r busy0 total0 < <(machine_ticks)
machine_busy() { local b t; read -r b t < <(machine_ticks); awk -v b=$((b - busy0)) -v t=$((t - total0)) 'BEGIN {printf "machine busy: %.0f%% of %d CPUs\n", 100 * b / (t > 0 ? t : 1), '"$(nproc)"'}' | tee "$out/machine.txt"; }
if [ "$transport" = vxlan ]; then
    sleep "$seconds"; machine_busy; wait "$load_pid" || true; tail -4 "$out/load.txt"
else
# ip netns exec and the dotnet host exec in place: these are the daemons' own process ids.
daemon_pids="${daemon_pid[a]},${daemon_pid[b]}"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Context switches per thread ("tid count"): each time a thread went to sleep or was preempted, so
# about its wake-ups (what an idle daemon costs), counted exactly where /proc's CPU time has 10 ms
# ticks. Threads that start or end within the window are left out (the runtime's pool retires workers).
switches() { for t in /proc/"$1"/task/*; do echo "${t##*/} $(awk '/ctxt_switches/ {n += $2} END {print n}' "$t/status" 2>/dev/null)"; done; }
declare -A before
for name in a b; do before[$name]=$(cpu_ticks "${daemon_pid[$name]}"); switches "${daemon_pid[$name]}" >"$work/sw-$name-0"; done
if [ "$use_perf" = yes ]; then
    perf record -e cpu-clock -F 999 -g -p "$daemon_pids" -o "$out/perf.data" -- sleep "$seconds" 2>"$out/perf-record.txt"
else
    sleep "$seconds"; echo "not recorded (--no-perf)" >"$out/perf-record.txt"
fi
machine_busy
declare -A after
for name in a b; do after[$name]=$(cpu_ticks "${daemon_pid[$name]}"); switches "${daemon_pid[$name]}" >"$work/sw-$name-1"; done
wait "$load_pid" || true
if [ "$use_perf" = yes ]; then
for name in a b; do
    pid=${daemon_pid[$name]}
    perf script -i "$out/perf.data" --pid "$pid" 2>/dev/null \
        | python3 "$repo/bench/flamegraph.py" --title "daemon $name ($transport link, $test test)" --svg "$out/flame-$name.svg" \
        >"$out/top-$name.txt"
done
fi
tail -4 "$out/load.txt"
fi
if [ "$test" = udp64 ]; then
    stage_counters >"$work/stages-after"
    # Each stage's count over the whole load, and the share of vmA's sends lost there.
    awk 'NR == FNR {b[$1] = $2; next} {d[$1] = $2 - b[$1]}
         END {
           s = d["vmA_udp_out"]; if (s <= 0) s = 1
           printf "%-44s %10d\n", "vmA sent (UDP datagrams)", d["vmA_udp_out"]
           printf "%-44s %10d  %5.1f%% of sent\n", "lost in devA (tapA ring full: daemon a behind)", d["tapA_ring_full"], 100 * d["tapA_ring_full"] / s
           printf "%-44s %10d\n", "read by daemon a from tapA (vxA: sent)", d["tapA_read"]
           printf "%-44s %10d  %5.1f%% of sent\n", "lost at daemon b link socket (buffer full)", d["hostB_link_rcvbuf"], 100 * d["hostB_link_rcvbuf"] / s
           printf "%-44s %10d\n", "written by daemon b to tapB (vxB: received)", d["tapB_written"]
           printf "%-44s %10d  %5.1f%% of sent\n", "lost in tapB (dropped on write)", d["tapB_dropped"], 100 * d["tapB_dropped"] / s
           printf "%-44s %10d  %5.1f%% of sent\n", "lost at vmB receiver socket (buffer full)", d["vmB_rcvbuf"], 100 * d["vmB_rcvbuf"] / s
           printf "%-44s %10d  %5.1f%% of sent\n", "lost in a CPU backlog (softnet, all)", d["backlog_dropped"], 100 * d["backlog_dropped"] / s
           printf "%-44s %10d  %5.1f%% of sent\n", "received by vmB", d["vmB_udp_in"], 100 * d["vmB_udp_in"] / s
         }' "$work/stages-before" "$work/stages-after" | tee "$out/stages.txt"
fi
# The ping test's distribution (ping's own summary gives the mean, which a few slow ones move).
[ "$test" = ping ] && grep -o 'time=[0-9.]*' "$out/load.txt" | cut -d= -f2 | sort -n \
    | awk '{t[NR] = $1} END {if (NR) printf "ping: %d replies, min %.3f, median %.3f, p90 %.3f, p99 %.3f ms\n", NR, t[1], t[int((NR + 1) / 2)], t[int(NR * 0.9)], t[int(NR * 0.99)]}' \
    | tee "$out/ping.txt"
# CPU of each daemon over the recorded window: from the samples (cpu-clock at 999 Hz), and from
# /proc (user + system time, in clock ticks of 10 ms; perf's own cost is in both).
[ "$transport" = vxlan ] && exit 0
hz=$(getconf CLK_TCK)
for name in a b; do
    ticks=$(( after[$name] - before[$name] ))
    sw=$(awk 'NR == FNR {b[$1] = $2; next} ($1 in b) && $2 != "" {n += $2 - b[$1]} END {print n + 0}' "$work/sw-$name-0" "$work/sw-$name-1")
    samples="not sampled"
    [ "$use_perf" = yes ] && samples="$(head -1 "$out/top-$name.txt") in $seconds s = $(awk -v s="$seconds" '{printf "%.2f%% of a core", 100 * $1 / 999 / s; exit}' "$out/top-$name.txt")"
    echo "daemon $name: $samples; /proc: $(awk -v t="$ticks" -v s="$seconds" -v hz="$hz" 'BEGIN {printf "%.2f%%", 100 * t / hz / s}'); context switches: $sw ($(awk -v n="$sw" -v s="$seconds" 'BEGIN {printf "%.1f", n / s}')/s)"
done | tee "$out/cpu.txt"
[ "$use_perf" = yes ] && echo "profile in $out: flame-a.svg flame-b.svg top-a.txt top-b.txt"
exit 0
