#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine (or a FreeBSD one with pkg):
# pinned Bun (npm) and Zig (PyPI) into .tools/, the system packages the jails and tests
# need, npm dependencies, and the shim built for this host. Cheap when everything is there.
set -euo pipefail

BUN_VERSION=1.4.4
ZIG_VERSION=0.15.2
PEBBLE_VERSION=v2.10.3
here=$(cd "$(dirname "$0")/.." && pwd)
tools="${LJ_TOOLS_DIR:-$here/.tools}"
# Colour only on a terminal, and never with NO_COLOR (https://no-color.org).
if [ -t 2 ] && [ -z "${NO_COLOR:-}" ]; then
  say() { printf '\033[1;34m[bootstrap]\033[0m %s\n' "$*" >&2; }
else
  say() { printf '[bootstrap] %s\n' "$*" >&2; }
fi

need_root_pkgs() {
  [ "$(uname -s)" = Linux ] || return 0
  command -v dpkg-query >/dev/null || { say "not a Debian system: install bubblewrap, debootstrap, nftables, iproute2, git, xz-utils yourself"; return 0; }
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  # Packages with daemons (redis, postgres) must not start them on the host: jails run them.
  local policy=/usr/sbin/policy-rc.d had_policy=0
  [ -e "$policy" ] && had_policy=1
  [ "$had_policy" = 1 ] || printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$had_policy" = 1 ] || rm -f "$policy"
}

install_bun() {
  local bun="$tools/bun/node_modules/bun/bin/bun.exe"
  if [ -x "$bun" ] && [ "$("$bun" --version 2>/dev/null)" = "$BUN_VERSION" ]; then return 0; fi
  say "installing bun $BUN_VERSION from npm"
  command -v npm >/dev/null || need_root_pkgs npm
  rm -rf "$tools/bun"
  mkdir -p "$tools/bun"
  npm install --silent --no-audit --no-fund --foreground-scripts --prefix "$tools/bun" "bun@$BUN_VERSION" >/dev/null
  # The npm package's postinstall normally swaps in the native binary; if install scripts
  # were refused, take it from the platform package directly.
  if ! "$bun" --version >/dev/null 2>&1; then
    local plat
    plat=$(ls -d "$tools"/bun/node_modules/@oven/bun-* 2>/dev/null | head -n1)
    [ -n "$plat" ] && cp "$plat/bin/bun" "$bun"
  fi
  "$bun" --version >/dev/null
}

install_zig() {
  local zig="$tools/zig/ziglang/zig"
  if [ -x "$zig" ] && [ "$("$zig" version 2>/dev/null)" = "$ZIG_VERSION" ]; then return 0; fi
  say "installing zig $ZIG_VERSION from PyPI (ziglang)"
  local py
  py=$(command -v python3 || true)
  [ -n "$py" ] || { need_root_pkgs python3 python3-pip; py=python3; }
  rm -rf "$tools/zig"
  "$py" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$tools/zig" "ziglang==$ZIG_VERSION" 2>&1 | grep -v -i 'running pip as' >&2 || true
  "$zig" version >/dev/null
}

if [ "$(id -u)" = 0 ]; then
  # The host world shares the host's /usr: tests run sample apps with python3, perl and node, and
  # PaaS services with the host's postgres and redis binaries.
  # e2fsprogs: build disks are ext4 images (mkfs.ext4), loop-mounted by util-linux's mount.
  need_root_pkgs ca-certificates git iproute2 nftables bubblewrap debootstrap xz-utils util-linux procps \
    e2fsprogs python3 perl nodejs postgresql redis-server
  # nginx: lj serve's edge (--edge auto picks it; util-linux's setpriv ties its master's life to
  # lj serve) and bench/edge.ts's yardstick; wrk for load, openssl to read certificates.
  need_root_pkgs wrk nginx openssl strace
  # The pure cgroup v2 guest that scripts/test.sh runs the jail tests in, on a host with v1
  # hierarchies: QEMU and a Debian kernel (scripts/cgroup2-guest.sh). Debian x86_64 only.
  if [ "${LJ_GUEST:-}" != 0 ] && [ "$(uname -sm)" = "Linux x86_64" ] && grep -q ' - cgroup ' /proc/self/mountinfo &&
    grep -qx 'ID=debian' /etc/os-release 2>/dev/null; then
    need_root_pkgs qemu-system-x86 linux-image-amd64
  fi
fi
install_bun
install_zig
# Pebble (Let's Encrypt's ACME test server) and its DNS stand-in, for the edge's ACME tests;
# with the test CA files Pebble's own HTTPS listener uses.
install_pebble() {
  local stamp="$tools/pebble/.version"
  [ "$(cat "$stamp" 2>/dev/null)" = "$PEBBLE_VERSION" ] && [ -x "$tools/bin/pebble" ] && return 0
  command -v go >/dev/null || { say "no Go toolchain: skipping Pebble (the ACME tests will fail)"; return 0; }
  say "building pebble $PEBBLE_VERSION with go"
  export GOPATH="$tools/go" GOMODCACHE="$tools/go/mod" GOBIN="$tools/bin" GOFLAGS=-modcacherw
  go install "github.com/letsencrypt/pebble/v2/cmd/pebble@$PEBBLE_VERSION" \
    "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@$PEBBLE_VERSION"
  mkdir -p "$tools/pebble"
  cp "$GOMODCACHE/github.com/letsencrypt/pebble/v2@$PEBBLE_VERSION/test/certs/pebble.minica.pem" \
    "$GOMODCACHE/github.com/letsencrypt/pebble/v2@$PEBBLE_VERSION/test/certs/localhost/cert.pem" \
    "$GOMODCACHE/github.com/letsencrypt/pebble/v2@$PEBBLE_VERSION/test/certs/localhost/key.pem" "$tools/pebble/"
  echo "$PEBBLE_VERSION" >"$stamp"
}

mkdir -p "$tools/bin"
install_pebble
# etcd and the Kubernetes control plane for the cluster tests (cached; minutes on a fresh machine).
bash "$here/scripts/kube-tools.sh"
ln -sf "$tools/bun/node_modules/bun/bin/bun.exe" "$tools/bin/bun"
ln -sf "$tools/zig/ziglang/zig" "$tools/bin/zig"
export PATH="$tools/bin:$PATH"

cd "$here"
stamp="$tools/.deps-stamp"
want=$( (cat package.json bun.lock 2>/dev/null || true) | sha256sum | cut -d" " -f1)
if [ ! -d node_modules ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "bun install"
  bun install --frozen-lockfile >/dev/null 2>&1 || bun install >/dev/null
  echo "$want" >"$stamp"
fi

# Build the shim when any Zig source is newer than the library.
lib="$here/zig/zig-out/lib/liblightjail.so"
if [ ! -f "$lib" ] || [ -n "$(find "$here/zig" -name '*.zig' -newer "$lib" -not -path '*/.zig-cache/*' -print -quit)" ]; then
  say "building the shim (zig build -Doptimize=ReleaseSafe)"
  (cd "$here/zig" && zig build -Doptimize=ReleaseSafe)
  touch "$lib"
fi
