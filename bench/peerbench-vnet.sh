#!/usr/bin/env bash
# Measures VNET (a TCP link and a UDP link) side by side with native veth, kernel VXLAN, tinc,
# OpenVPN and n2n, in one run of the peer benchmark harness (../shared/peerbench, see its README).
# Usage (root): bench/peerbench-vnet.sh [extra peerbench options, e.g. --runs 2]
# Environment: PEERBENCH=path/to/peerbench.sh, ONLY=comma list of overlays (default below).
# A/B comparison of builds in one run: BUILDS="old=DIR new=DIR" (each DIR a `dotnet publish` of
# src/Vnet.Cli) measures overlays vnet-old-tcp, vnet-new-tcp, vnet-old-udp, vnet-new-udp from
# those builds instead of building this checkout; ONLY defaults to vxlan and them.
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
# The key goes in a file that only root reads, not on the daemons' command lines.
first=${builds[0]}
keyfile=$(mktemp /tmp/vnet-bench-key.XXXXXX)
trap 'rm -f "$keyfile"' EXIT
dotnet "${first#*=}/vnet.dll" keygen >"$keyfile"

# Host A is the Proxy with its TAP as the "LAN"; host B is a host whose TAP faces its VM and
# whose star link to A uses the given transport.
command_for() {
    local transport=$1 vnet=$2
    cat <<CMD
if [ "\$PB_SIDE" = A ]; then
  exec $vnet daemon --name a --role proxy --listen \$PB_LOCAL_IP:\$PB_PORT --key-file $keyfile \
    --tap \$PB_TAP --lan \$PB_TAP --mtu \$PB_VM_MTU --control-socket \$PB_WORKDIR/vnet.sock --log-level warning
else
  exec $vnet daemon --name b --role host --listen \$PB_LOCAL_IP:\$PB_PORT --key-file $keyfile \
    --proxy \$PB_PEER_IP:\$PB_PORT --proxy-name a --transport $transport \
    --tap \$PB_TAP --mtu \$PB_VM_MTU --control-socket \$PB_WORKDIR/vnet.sock --log-level warning
fi
CMD
}

# Overlays in the order old-tcp, new-tcp, old-udp, new-udp, so that builds alternate in each run.
customs=()
names=()
for transport in tcp udp; do
    for b in "${builds[@]}"; do
        name=vnet${b%%=*}
        [ "$name" = vnet ] || name=vnet-${b%%=*}
        name=$name-$transport
        cmd=$(command_for "$transport" "dotnet ${b#*=}/vnet.dll")
        customs+=(--custom-name "$name" --custom "$cmd" "$cmd")
        names+=("$name")
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
