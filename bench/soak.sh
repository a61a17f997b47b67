#!/usr/bin/env bash
# Soak test (not run in CI): a Proxy with a home LAN, hosts and VMs in network namespaces, running
# for a long time under mixed traffic and faults, while each daemon's resources are sampled.
#
#   traffic     iperf3 (vm1 -> vm2, vm3 -> the LAN machine, vm4 -> vm6, each rate-limited, in back-to-back
#               runs) and pings (every VM to the next VM and to the LAN machine, all the time)
#   faults      in turn, one every --event-every seconds: vm1 migrates to the next host (its veth moves
#               to that host's bridge, then a gratuitous ARP, as MigrationTests does); a host's underlay
#               (wan0) goes down for 5 s (its star link dies and is re-dialed); a host's star link is
#               cut (its TCP connection destroyed with ss -K; the host re-dials at once)
#   samples     every --sample-every seconds, per daemon: RSS and threads (/proc/PID/status) and open
#               descriptors (/proc/PID/fd) into samples.csv
#   heap        with dotnet-counters and dotnet-gcdump on the PATH (dotnet tool install -g ...):
#               each daemon's runtime counters (managed heap after the last GC, committed memory,
#               working set) every --sample-every seconds into counters-NAME.csv, and a heap dump
#               of each daemon after the warm-up and at the end (heap-NAME-start/end.gcdump, and the
#               live objects by type in heap-NAME-*.txt): whether a growing RSS is managed objects
#               kept alive (a leak), or memory the GC and native code keep without objects in it.
#   summary     per daemon and measure: median of the first 10% of the samples (after --warmup) against
#               the median of the last 10%, the max and when it was first reached; "flat" when the
#               growth stays under the tolerance (RSS: 20% or 16 MiB, whichever is more; threads: 4;
#               descriptors: 16, since a host daemon opens about 9 descriptors once, at its first
#               lost WAN path). Then a final check that every VM pings every other VM and the LAN,
#               and how each daemon ends on SIGTERM (its exit status).
#
# The star links alternate: odd hosts dial the Proxy over TCP, even hosts over UDP.
# Everything it makes (namespaces, processes, the run directory's sockets) is removed at the end,
# also on Ctrl-C or SIGTERM; samples.csv, the logs and summary.txt stay in --out.
# Exit status: 0 all flat, converged and stopped cleanly; 1 a daemon died (or restarted), the overlay
# did not converge at the end, or a daemon did not exit 0 on SIGTERM; 3 a measure grew beyond its
# tolerance.
#
# Usage (root): bench/soak.sh [--duration 3600] [--sample-every 10] [--event-every 30] [--hosts 3]
#                             [--warmup 60] [--rate 30M] [--out DIR]
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
duration=3600 sample_every=10 event_every=30 hosts=3 warmup=60 rate=30M out=""
while [ $# -gt 0 ]; do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        --sample-every) sample_every=$2; shift 2 ;;
        --event-every) event_every=$2; shift 2 ;;
        --hosts) hosts=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
[ "$hosts" -ge 3 ] || { echo "--hosts must be at least 3" >&2; exit 2; }
for tool in ip iperf3 ping arping ss; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install iproute2 iperf3 iputils-ping iputils-arping)" >&2; exit 1; }
done

P="vsk$$"                                   # every namespace this run makes: $P-name
out=${out:-"$repo/artifacts/soak-$(date +%Y%m%d-%H%M%S)"}
run=$(mktemp -d /tmp/vnet-soak.XXXXXX)      # configs, sockets, pid files
mkdir -p "$out"
csv="$out/samples.csv"
vms=$((hosts * 2))
daemons="proxy $(seq -s ' ' -f 'h%g' 1 "$hosts")"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$out/soak.log" >&2; }

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for f in "$run"/*.pid; do
        [ -e "$f" ] || continue
        kill -TERM -- "-$(cat "$f")" 2>/dev/null || kill -TERM "$(cat "$f")" 2>/dev/null || true
    done
    sleep 1
    for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$run"
    left=$(ip netns list | awk '{print $1}' | grep -c "^$P-" || true)
    log "cleaned up (namespaces left: $left); results in $out"
    exit "$status"
}
trap cleanup EXIT
stopping=0
trap 'stopping=1; log "interrupted: stopping early"' INT TERM

vnet_dir="$repo/artifacts/soak-vnet"
log "building vnet into $vnet_dir"
dotnet publish "$repo/src/Vnet.Cli" -c Release -o "$vnet_dir" -nologo -clp:ErrorsOnly >/dev/null
vnet="dotnet $vnet_dir/vnet.dll"

ns() { ip netns exec "$P-$1" "${@:2}"; }
mkns() {
    ip netns add "$P-$1"
    ip -n "$P-$1" link set lo up
    ns "$1" sh -c '[ -d /proc/sys/net/ipv6 ] || exit 0; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'
}
veth() { ip -n "$P-$1" link add "$2" type veth peer name "$4" netns "$P-$3"; ip -n "$P-$1" link set "$2" up; ip -n "$P-$3" link set "$4" up; }
bridge() { ip -n "$P-$1" link add "$2" type bridge stp_state 0; ip -n "$P-$1" link set "$2" up; }
attach() { ip -n "$P-$1" link set "$2" master "$3"; ip -n "$P-$1" link set "$2" up; }
cli() { local d=$1; shift; $vnet "$@" --socket "$run/$d.sock"; }
vm_ip() { echo "10.50.0.$((10 + $1))"; }
host_of_vm() { echo "h$(( ($1 - 1) % hosts + 1 ))"; }
# Starts a command in the background as its own process group; its pid file lets cleanup end it.
bg() {
    local name=$1; shift
    setsid "$@" >"$out/$name.log" 2>&1 </dev/null &
    echo $! >"$run/$name.pid"
}

# ---------------------------------------------------------------- topology (as OverlayBed draws it)
log "making namespaces ($P-*): proxy, $hosts hosts, $vms VMs, LAN"
for n in wan lan lanhost proxy; do mkns "$n"; done
bridge wan br0; bridge lan br0
veth lanhost eth0 lan lh; attach lan lh br0
ip -n "$P-lanhost" link set eth0 address 02:50:00:00:00:01
ip -n "$P-lanhost" addr add 10.50.0.1/24 dev eth0
veth proxy wan0 wan p; attach wan p br0; ip -n "$P-proxy" addr add 192.0.2.1/24 dev wan0
veth proxy lan0 lan px; attach lan px br0
for i in $(seq 1 "$hosts"); do
    mkns "h$i"; veth "h$i" wan0 wan "h$i"; attach wan "h$i" br0
    ip -n "$P-h$i" addr add "192.0.2.$((10 + i))/24" dev wan0
    bridge "h$i" br0
done

# A key pair per daemon (files only root reads); the Proxy admits the hosts', the hosts pin the Proxy's.
for name in proxy $(seq -f 'h%g' 1 "$hosts"); do $vnet keygen -o "$run/$name.key" >/dev/null; done
pub() { $vnet pubkey <"$run/$1.key"; }
admitted=""
for i in $(seq 1 "$hosts"); do admitted+=$'\n[[host]]\n'"name = \"h$i\""$'\n'"public_key = \"$(pub "h$i")\""$'\n'; done
start_daemon() {
    local name=$1 config="$run/$1.toml"
    cat >"$config"
    bg "$name" ip netns exec "$P-$name" $vnet daemon --config "$config" --log-level information
}
start_daemon proxy <<EOF
name = "proxy"
role = "proxy"
listen = "192.0.2.1:5500"
key_file = "$run/proxy.key"
control_socket = "$run/proxy.sock"

[[interface]]
name = "lan0"
kind = "pcap"
lan = true
$admitted
EOF
for i in $(seq 1 "$hosts"); do
    transport=tcp; [ $((i % 2)) = 0 ] && transport=udp
    start_daemon "h$i" <<EOF
name = "h$i"
role = "host"
listen = "192.0.2.$((10 + i)):5500"
key_file = "$run/h$i.key"
control_socket = "$run/h$i.sock"

[proxy]
name = "proxy"
address = "192.0.2.1:5500"
public_key = "$(pub proxy)"
transport = "$transport"

[[interface]]
name = "tap0"
bridge = "br0"
EOF
done
for t in $(seq 1 150); do
    up=$(cli proxy link list --json 2>/dev/null | grep -o '"up": *true' | wc -l || true)
    [ "$up" -ge "$hosts" ] && break
    [ "$t" = 150 ] && { log "the star did not come up in 30 s"; exit 1; }
    sleep 0.2
done
log "star up: $hosts hosts linked to the Proxy"

for n in $(seq 1 "$vms"); do
    h=$(host_of_vm "$n")
    mkns "vm$n"; veth "vm$n" eth0 "$h" "vm$n"; attach "$h" "vm$n" br0
    ip -n "$P-vm$n" link set eth0 address "02:00:00:00:00:$(printf %02x "$n")"
    ip -n "$P-vm$n" addr add "$(vm_ip "$n")/24" dev eth0
    echo "$h" >"$run/vm$n.host"
done

# Every VM pings every other VM and the LAN machine, retrying for up to $1 seconds; prints the
# pairs that never answered.
mesh_ping() {
    local deadline=$(( $(date +%s) + $1 )) pending="" a b t
    for a in $(seq 1 "$vms"); do
        for b in $(seq 1 "$vms") 0; do [ "$a" != "$b" ] && pending="$pending $a:$b"; done
    done
    while [ -n "$pending" ]; do
        local failed=""
        for pair in $pending; do
            a=${pair%%:*} b=${pair#*:}
            t=$(vm_ip "$b"); [ "$b" = 0 ] && t=10.50.0.1
            ( ns "vm$a" ping -n -q -c 1 -W 2 "$t" >/dev/null 2>&1 || echo "$pair" >>"$run/mesh.failed" ) &
        done
        wait
        failed=$(cat "$run/mesh.failed" 2>/dev/null | tr '\n' ' ' || true); rm -f "$run/mesh.failed"
        pending=$failed
        [ -z "$pending" ] && return 0
        [ "$(date +%s)" -ge "$deadline" ] && { echo "$pending"; return 1; }
        sleep 1
    done
}
if ! unreached=$(mesh_ping 30); then log "the overlay did not converge at the start: $unreached"; exit 1; fi
log "every VM pings every other VM and the LAN"

# ---------------------------------------------------------------- traffic
end=$(( $(date +%s) + duration ))
bg iperf3-server-vm2 ip netns exec "$P-vm2" iperf3 -s
bg iperf3-server-lan ip netns exec "$P-lanhost" iperf3 -s
bg iperf3-server-vm6 ip netns exec "$P-vm$vms" iperf3 -s
sleep 1
# Back-to-back iperf3 runs of 20 s until the end; each run's last line and status go to the log.
iperf_loop() {
    local name=$1 from=$2 to=$3
    bg "iperf3-$name" bash -c "while [ \$(date +%s) -lt $end ]; do
        ip netns exec $P-$from iperf3 -c $to -t 20 -b $rate --connect-timeout 3000 2>&1 | tail -n 4 | head -n 1
        echo \"exit \${PIPESTATUS[0]}\"; sleep 1; done"
}
iperf_loop vm1-vm2 vm1 "$(vm_ip 2)"
iperf_loop vm3-lan vm3 10.50.0.1
iperf_loop vm4-vm$vms vm4 "$(vm_ip "$vms")"
for n in $(seq 1 "$vms"); do
    next=$(( n % vms + 1 ))
    bg "ping-vm$n-vm$next" ip netns exec "$P-vm$n" ping -n -q -i 0.5 -w "$duration" "$(vm_ip "$next")"
    bg "ping-vm$n-lan" ip netns exec "$P-vm$n" ping -n -q -i 0.5 -w "$duration" 10.50.0.1
done

# ---------------------------------------------------------------- samples and faults
daemon_pid() {
    local p
    for p in $(ip netns pids "$P-$1" 2>/dev/null); do
        if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "vnet.dll daemon"; then echo "$p"; return; fi
    done
}
declare -A first_pid
for d in $daemons; do first_pid[$d]=$(daemon_pid "$d"); done
echo "seconds,daemon,pid,rss_kb,threads,fds" >"$csv"
export PATH="$PATH:$HOME/.dotnet/tools"
heap_tools=0
command -v dotnet-counters >/dev/null && command -v dotnet-gcdump >/dev/null && heap_tools=1
if [ "$heap_tools" = 1 ]; then
    for d in $daemons; do
        bg "counters-$d" dotnet-counters collect -p "${first_pid[$d]}" --refresh-interval "$sample_every" \
            --format csv -o "$out/counters-$d.csv" --counters System.Runtime
    done
else
    log "no dotnet-counters/dotnet-gcdump on the PATH: no heap figures (dotnet tool install -g dotnet-counters dotnet-gcdump)"
fi
# A heap dump of every daemon (it forces a full GC) and its live objects by type.
heap_dump() {
    local d pid
    [ "$heap_tools" = 1 ] || return 0
    for d in $daemons; do
        pid=$(daemon_pid "$d"); [ -n "$pid" ] || continue
        dotnet-gcdump collect -p "$pid" -o "$out/heap-$d-$1.gcdump" >/dev/null 2>&1 \
            && dotnet-gcdump report "$out/heap-$d-$1.gcdump" >"$out/heap-$d-$1.txt" 2>&1 || true
    done
    log "heap dumps ($1) in $out/heap-*-$1.txt"
}
heap_started=0
t0=$(date +%s)
sample() {
    local now=$(( $(date +%s) - t0 )) d pid rss threads fds
    for d in $daemons; do
        pid=$(daemon_pid "$d")
        if [ -z "$pid" ]; then echo "$now,$d,,,," >>"$csv"; continue; fi
        # The process may end between the look-up and the reads: then the row has gaps.
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        threads=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l || true)
        echo "$now,$d,$pid,$rss,$threads,$fds" >>"$csv"
    done
}

migrate() {
    local from to next
    from=$(cat "$run/vm1.host")
    next=$(( ${from#h} % hosts + 1 )); to="h$next"
    ip -n "$P-$from" link set vm1 netns "$P-$to"
    attach "$to" vm1 br0
    echo "$to" >"$run/vm1.host"
    ns vm1 arping -q -U -c 1 -I eth0 "$(vm_ip 1)" || true
    log "event: vm1 migrated $from -> $to"
}
underlay_flap() {
    local h="h$(( (flaps % hosts) + 1 ))"
    flaps=$((flaps + 1))
    ip -n "$P-$h" link set wan0 down
    log "event: $h's underlay (wan0) down for 5 s"
    sleep 5
    ip -n "$P-$h" link set wan0 up
}
star_cut() {
    local h="h$(( (cuts % hosts) + 1 ))"
    cuts=$((cuts + 1))
    # The star link's TCP connection (for UDP links, its control connection) is destroyed.
    ns "$h" ss -K -t dst 192.0.2.1 dport = 5500 >/dev/null 2>&1 || true
    log "event: $h's star link cut (ss -K)"
}

events=0 flaps=0 cuts=0
next_sample=0 next_event=$event_every
log "soak: $duration s, samples every $sample_every s into $csv, a fault every $event_every s"
while [ "$stopping" = 0 ] && [ "$(date +%s)" -lt "$end" ]; do
    elapsed=$(( $(date +%s) - t0 ))
    if [ "$elapsed" -ge "$next_sample" ]; then sample; next_sample=$((next_sample + sample_every)); fi
    if [ "$heap_started" = 0 ] && [ "$elapsed" -ge "$warmup" ]; then heap_dump start; heap_started=1; fi
    if [ "$elapsed" -ge "$next_event" ]; then
        case $((events % 3)) in
            0) migrate ;;
            1) underlay_flap ;;
            2) star_cut ;;
        esac
        events=$((events + 1)); next_event=$((next_event + event_every))
    fi
    sleep 1
done
sample
heap_dump end

# ---------------------------------------------------------------- summary
{
    echo "soak summary: $(( $(date +%s) - t0 )) s of $duration s, $hosts hosts, $vms VMs, $events faults" \
        "($(( (events + 2) / 3 )) migrations, $flaps underlay flaps, $cuts star link cuts)"
    echo "samples: $csv ($(($(wc -l <"$csv") - 1)) rows); warm-up excluded: first $warmup s"
    printf '%-6s %-8s %12s %12s %12s %9s  %s\n' daemon measure "first 10%" "last 10%" max "max at" verdict
} | tee "$out/summary.txt"
verdict=0
for d in $daemons; do
    pids=$(awk -F, -v d="$d" '$2 == d {print $3}' "$csv" | sort -u | tr '\n' ' ')
    if [ "$(echo $pids | wc -w)" != 1 ] || [ -z "$(daemon_pid "$d")" ] || [ "$(daemon_pid "$d")" != "${first_pid[$d]}" ]; then
        echo "$d: the daemon died or restarted (pids seen: ${pids:-none})" | tee -a "$out/summary.txt"
        verdict=1
        continue
    fi
    for m in rss_kb:4 threads:5 fds:6; do
        name=${m%%:*} col=${m#*:}
        awk -F, -v d="$d" -v c="$col" -v w="$warmup" '$2 == d && $1 >= w && $c != "" {print $c}' "$csv" >"$run/values"
        n=$(wc -l <"$run/values")
        [ "$n" -eq 0 ] && awk -F, -v d="$d" -v c="$col" '$2 == d && $c != "" {print $c}' "$csv" >"$run/values" && n=$(wc -l <"$run/values")
        k=$(( n / 10 )); [ "$k" -lt 1 ] && k=1
        median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
        first=$(head -n "$k" "$run/values" | median)
        last=$(tail -n "$k" "$run/values" | median)
        max=$(sort -n "$run/values" | tail -n 1)
        at=$(awk -F, -v d="$d" -v c="$col" -v m="$max" '$2 == d && $c == m {print $1; exit}' "$csv")
        case $name in
            rss_kb) allowed=$(( first / 5 > 16384 ? first / 5 : 16384 )) ;;
            threads) allowed=4 ;;
            fds) allowed=16 ;;
        esac
        if [ $((last - first)) -le "$allowed" ]; then word="flat (+$((last - first)), allowed +$allowed)"
        else word="GROWING (+$((last - first)), allowed +$allowed)"; [ "$verdict" = 0 ] && verdict=3; fi
        printf '%-6s %-8s %12s %12s %12s %9s  %s\n' "$d" "$name" "$first" "$last" "$max" "${at}s" "$word" | tee -a "$out/summary.txt"
    done
done

# Traffic: iperf3 runs that failed, ping loss per pair.
for f in "$out"/iperf3-vm*.log; do
    [ -e "$f" ] || continue
    runs=$(grep -c '^exit ' "$f" || true); bad=$(grep '^exit ' "$f" | grep -vc '^exit 0$' || true)
    echo "$(basename "$f" .log): $runs runs, $bad failed" | tee -a "$out/summary.txt"
done
for f in "$run"/ping-*.pid; do kill -INT "$(cat "$f")" 2>/dev/null || true; done
sleep 1
for f in "$out"/ping-*.log; do
    echo "$(basename "$f" .log): $(grep -o '[0-9.]*% packet loss' "$f" || echo 'no summary')"
done | tee -a "$out/summary.txt"

if unreached=$(mesh_ping 30); then
    echo "at the end: every VM pings every other VM and the LAN" | tee -a "$out/summary.txt"
else
    echo "at the end: NOT converged, unanswered (vm:vm, 0 = LAN): $unreached" | tee -a "$out/summary.txt"
    verdict=1
fi
# A daemon must end cleanly on SIGTERM, also with traffic still flowing (10 s, then SIGKILL).
for d in $daemons; do kill -TERM "$(cat "$run/$d.pid")" 2>/dev/null || true; done
for d in $daemons; do
    pid=$(cat "$run/$d.pid")
    for t in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid" 2>/dev/null || true; }
    code=0; wait "$pid" 2>/dev/null || code=$?
    rm -f "$run/$d.pid"
    n=$(grep -c 'fail:\|crit:\|Unhandled exception' "$out/$d.log" || true)
    echo "$d: exit status $code on SIGTERM$([ "$code" = 134 ] && echo ' (SIGABRT: crashed)'); log: $(wc -l <"$out/$d.log") lines, $n errors" \
        | tee -a "$out/summary.txt"
    [ "$code" = 0 ] || verdict=1
done
echo "verdict: $([ $verdict = 0 ] && echo 'every daemon stayed flat, the overlay converged, every daemon stopped cleanly' || \
    ([ $verdict = 3 ] && echo 'a measure grew beyond its tolerance' || echo 'FAILED: a daemon died, did not stop cleanly, or the overlay did not converge'))" \
    | tee -a "$out/summary.txt"
exit "$verdict"
