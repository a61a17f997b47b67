#!/usr/bin/env bash
# Measures VNET (a TCP link and a UDP link) side by side with native veth, kernel VXLAN, tinc,
# OpenVPN and n2n, in one run of the peer benchmark harness (../shared/peerbench, see its README).
# Usage (root): bench/peerbench-vnet.sh [extra peerbench options, e.g. --runs 2]
# Environment: PEERBENCH=path/to/peerbench.sh, ONLY=comma list of overlays (default below).
set -euo pipefail

repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
peerbench=${PEERBENCH:-$repo/../shared/peerbench/peerbench.sh}
only=${ONLY:-native,vxlan,tinc,tinc-null,openvpn-none,n2n,vnet-tcp,vnet-udp}
[ -x "$peerbench" ] || { echo "peerbench harness not found at $peerbench (set PEERBENCH)" >&2; exit 2; }

# Build once, before the harness starts its ready timers.
out="$repo/artifacts/bench-vnet"
dotnet publish "$repo/src/Vnet.Cli" -c Release -o "$out" -nologo -clp:ErrorsOnly >/dev/null
vnet="dotnet $out/vnet.dll"
key=$($vnet keygen)

# Host A is the Proxy with its TAP as the "LAN"; host B is a host whose TAP faces its VM and
# whose star link to A uses the given transport.
command_for() {
    local transport=$1
    cat <<CMD
if [ "\$PB_SIDE" = A ]; then
  exec $vnet daemon --name a --role proxy --listen \$PB_LOCAL_IP:\$PB_PORT --key $key \
    --tap \$PB_TAP --lan \$PB_TAP --mtu \$PB_VM_MTU --control-socket \$PB_WORKDIR/vnet.sock --log-level warning
else
  exec $vnet daemon --name b --role host --listen \$PB_LOCAL_IP:\$PB_PORT --key $key \
    --proxy \$PB_PEER_IP:\$PB_PORT --proxy-name a --transport $transport \
    --tap \$PB_TAP --mtu \$PB_VM_MTU --control-socket \$PB_WORKDIR/vnet.sock --log-level warning
fi
CMD
}

cd "$(dirname "$peerbench")"
exec "$peerbench" --only "$only" \
    --custom-name vnet-tcp --custom "$(command_for tcp)" "$(command_for tcp)" \
    --custom-name vnet-udp --custom "$(command_for udp)" "$(command_for udp)" \
    "$@"
