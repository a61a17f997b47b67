#!/usr/bin/env bash
# Builds the release archive: vnet as one self-contained executable (no .NET needed on the
# target; ReadyToRun, so it starts in half the time of `dotnet vnet.dll`: docs/operations.md),
# libsodium beside it, the systemd unit, the shell completions and the documentation.
#   packaging/build.sh [VERSION]   ->  artifacts/vnet-VERSION-linux-x64.tar.gz
# Installing it: docs/operations.md ("Install").
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
version=${1:-$(git describe --tags --always 2>/dev/null || echo dev)}
name=vnet-$version-linux-x64
out=artifacts/$name
rm -rf "$out" && mkdir -p "$out"/{bin,lib,systemd,completion,doc}
dotnet publish src/Vnet.Cli -c Release -r linux-x64 --self-contained -p:PublishSingleFile=true -p:PublishReadyToRun=true \
    -p:DebugType=none -o "$out/bin" -nologo -clp:ErrorsOnly
# The single file looks for native libraries beside itself.
rm -f "$out"/bin/*.xml "$out"/bin/*.pdb
cp packaging/vnet@.service "$out/systemd/"
"$out/bin/vnet" completion bash > "$out/completion/vnet.bash"
"$out/bin/vnet" completion zsh > "$out/completion/_vnet"
cp README.md docs/operations.md docs/daemon.md docs/cli.md docs/security.md "$out/doc/"
tar -C artifacts -czf "artifacts/$name.tar.gz" "$name"
ls -la "artifacts/$name.tar.gz"
