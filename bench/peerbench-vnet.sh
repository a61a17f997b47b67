#!/usr/bin/env bash
# Measures VNET (a TCP link and a UDP link) side by side with native veth, kernel VXLAN, tinc,
# OpenVPN and n2n, in one run of the peer benchmark harness (../shared/peerbench, see its README).
# Usage (root): bench/peerbench-vnet.sh [extra peerbench options, e.g. --runs 2]
# Environment: PEERBENCH=path/to/peerbench.sh, ONLY=comma list of overlays (default below).
# A/B comparison of builds in one run: BUILDS="old=DIR new=DIR" (each DIR a `dotnet publish` of
# src/Vnet.Cli) measures overlays vnet-old-tcp, vnet-new-tcp, vnet-old-udp, vnet-new-udp from
# those builds instead of building this checkout; ONLY defaults to vxlan and them.
# ATTACH=pcap: the daemons open the host end of the VM's veth as interface kind pcap (a packet
# socket) instead of a TAP on the host's bridge (peerbench --custom-attach pcap, which turns the
# VMs' checksum offload, TSO and GSO off); overlay names get -pcap (vnet-tcp-pcap ...).
# ATTACH="tap pcap" measures both attaches side by side in one run.
# QUEUES="N ..." (TAP attach only): the daemons' TAPs get N receive queues each (--tap-queues N,
# a reader thread per queue); one overlay per N, named -qN when N > 1, so QUEUES="1 4" measures
# vnet-tcp and vnet-tcp-q4 side by side in one run (the multi-stream test is the one that can
# differ: a single flow stays on one queue). Needs builds that have --tap-queues.
# STREAMS="N ..." : host B's star link gets N parallel sessions (--streams N, frames spread over
# them by flow; on a UDP link each stream above the first has its own UDP socket); one overlay per
# transport and N, named -sN when N > 1, so ONLY=vnet-tcp,vnet-tcp-s4 STREAMS="1 4" measures both in
# one run. Needs builds that have --streams (and, for UDP overlays with N > 1, UDP streams).
set -euo pipefail

repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
peerbench=${PEERBENCH:-$repo/../shared/peerbench/peerbench.sh}
[ -x "$peerbench" ] || { echo "peerbench harness not found at $peerbench (set PEERBENCH)" >&2; exit 2; }

# name=directory of each build; without BUILDS, this checkout, built once before the harness
# starts its ready timers, under the overlay names vnet-tcp and vnet-udp.
builds=()
if [ -n "${BUILDS:-}" ]; then
    read -r -a builds <<<"$BUILDS"
    for b in "${builds[@]}"; do
        [[ $b == ?*=?* && -f ${b#*=}/vnet.dll ]] || { echo "BUILDS: '$b' is not NAME=DIR with DIR/vnet.dll" >&2; exit 2; }
    done
else
    out="$repo/artifacts/bench-vnet"
    dotnet publish "$repo/src/Vnet.Cli" -c Release -o "$out" -nologo -clp:ErrorsOnly >/dev/null
    builds=("=$out")
fi
# Keys go in files that only root reads (mktemp -d makes the directory 0700), never on the
# daemons' command lines. A build with daemon identities (it has `vnet pubkey`) gets a key pair
# per daemon, the Proxy admitting B's and B pinning A's; an older build, one network key.
work=$(mktemp -d /tmp/vnet-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Sets a_keys and b_keys: the key options of daemons A and B of build $1 (its directory), files in $2.
keys_for() {
    local vnet="dotnet $1/vnet.dll" dir=$2
    mkdir -p "$dir"
    if $vnet daemon --help 2>/dev/null | grep -q -- --proxy-key; then
        $vnet keygen -o "$dir/a.key" >/dev/null
        $vnet keygen -o "$dir/b.key" >/dev/null
        a_keys="--key-file $dir/a.key --admit b=$($vnet pubkey <"$dir/b.key")"
        b_keys="--key-file $dir/b.key --proxy-key $($vnet pubkey <"$dir/a.key")"
    else
        (umask 077; $vnet keygen >"$dir/network.key")
        a_keys="--key-file $dir/network.key"
        b_keys="--key-file $dir/network.key"
    fi
}

read -r -a attaches <<<"${ATTACH:-tap}"
for attach in "${attaches[@]}"; do
    [[ $attach == tap || $attach == pcap ]] || { echo "ATTACH must be tap or pcap (or both), not '$attach'" >&2; exit 2; }
done
read -r -a queue_counts <<<"${QUEUES:-1}"
for q in "${queue_counts[@]}"; do
    [[ $q =~ ^[0-9]+$ ]] && ((q >= 1 && q <= 16)) || { echo "QUEUES: '$q' is not a number of queues (1..16)" >&2; exit 2; }
done
read -r -a stream_counts <<<"${STREAMS:-1}"
for n in "${stream_counts[@]}"; do
    [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 8)) || { echo "STREAMS: '$n' is not a number of streams (1..8)" >&2; exit 2; }
done
# The daemons' interface options for an attach, and the overlay name's suffix.
attach_options() {
    case $1 in
        tap) iface='--tap $PB_TAP' lan='$PB_TAP' suffix='' ;;
        pcap) iface='--pcap $PB_IFACE' lan='$PB_IFACE' suffix=-pcap ;;
    esac
}

# Host A is the Proxy with its interface as the "LAN"; host B is a host whose interface faces its
# VM and whose star link to A uses the given transport. $3: the TAPs' queues; $4: the star link's streams.
command_for() {
    local transport=$1 vnet=$2 queues=$3 streams=$4 dev=$iface star=""
    [ "$queues" = 1 ] || dev="$iface --tap-queues $queues"
    [ "$streams" = 1 ] || star="--streams $streams"
    cat <<CMD
if [ "\$PB_SIDE" = A ]; then
  exec $vnet daemon --name a --role proxy --listen \$PB_LOCAL_IP:\$PB_PORT $a_keys \
    $dev --lan $lan --mtu \$PB_VM_MTU --control-socket \$PB_WORKDIR/vnet.sock --log-level warning
else
  exec $vnet daemon --name b --role host --listen \$PB_LOCAL_IP:\$PB_PORT $b_keys \
    --proxy \$PB_PEER_IP:\$PB_PORT --proxy-name a --transport $transport $star \
    $dev --mtu \$PB_VM_MTU --control-socket \$PB_WORKDIR/vnet.sock --log-level warning
fi
CMD
}

# Overlays in the order old-tcp, new-tcp, old-udp, new-udp (per attach), so that builds alternate in each run.
customs=()
names=()
for attach in "${attaches[@]}"; do
  attach_options "$attach"
  for transport in tcp udp; do
    for q in "${queue_counts[@]}"; do
      # Multi-queue is a TAP's.
      [[ $q == 1 || $attach == tap ]] || continue
      for n in "${stream_counts[@]}"; do
        for b in "${builds[@]}"; do
            name=vnet${b%%=*}
            [ "$name" = vnet ] || name=vnet-${b%%=*}
            name=$name-$transport$suffix
            [ "$q" = 1 ] || name=$name-q$q
            [ "$n" = 1 ] || name=$name-s$n
            keys_for "${b#*=}" "$work/$name"
            cmd=$(command_for "$transport" "dotnet ${b#*=}/vnet.dll" "$q" "$n")
            customs+=(--custom-name "$name" --custom-attach "$attach" --custom "$cmd" "$cmd")
            names+=("$name")
        done
      done
    done
  done
done
vnet_names=$(IFS=,; echo "${names[*]}")
if [ -n "${BUILDS:-}" ]; then
    only=${ONLY:-vxlan,$vnet_names}
else
    only=${ONLY:-native,vxlan,tinc,tinc-null,openvpn-none,n2n,$vnet_names}
fi

cd "$(dirname "$peerbench")"
"$peerbench" --only "$only" "${customs[@]}" "$@"
