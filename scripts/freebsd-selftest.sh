#!/bin/sh
# The first run of lightjail on FreeBSD 14 or 15: checks the host, builds the shim, then
# spawns real jails and checks isolation, the state-root mask, RCTL limits, address aliases,
# signals, kill/timeout teardown, pooled jails, owner identity, gc, file mounts and what a
# SIGKILLed supervisor leaves (scripts/freebsd-selftest.ts). Run as root from the checkout:
#
#   scripts/freebsd-selftest.sh              # everything, with / (read-only) as the jails' root
#   LJ_SELFTEST_ROOT=/usr/local/lj/worlds/14.1-RELEASE scripts/freebsd-selftest.sh
#
# Prints one line per check and a summary; exits 1 when a check failed. Send the output with
# any report (docs/freebsd.md, "First run"). It changes nothing outside a temporary
# LIGHTJAIL_ROOT under /var/tmp, jails named ljst*, RCTL rules for them and the alias
# 127.0.0.77 on lo0, all removed at the end.
set -u

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
fails=0
say() { printf '%-4s %s\n' "$1" "$2"; }
need() { # need NAME COMMAND...: a host check, failing stops the run
  name=$1
  shift
  if "$@" >/dev/null 2>&1; then say ok "$name"; else say FAIL "$name" && fails=$((fails + 1)); fi
}

[ "$(uname -s)" = FreeBSD ] || { echo "freebsd-selftest: this is $(uname -s), not FreeBSD" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "freebsd-selftest: run as root (jail_set, nmount, RCTL, aliases)" >&2; exit 2; }

major=$(uname -r | cut -d. -f1)
say info "FreeBSD $(uname -r) on $(uname -m)"
case $major in
  14 | 15) say ok "FreeBSD 14 or 15" ;;
  *) say FAIL "FreeBSD 14 or 15 (this is $major)"; fails=$((fails + 1)) ;;
esac
need "RACCT/RCTL enabled (kern.racct.enable=1 in /boot/loader.conf, reboot)" test "$(sysctl -n kern.racct.enable 2>/dev/null)" = 1
for m in nullfs unionfs tmpfs; do
  need "$m available" sh -c "kldstat -q -m $m || kldload $m"
done
need "devfs ruleset 6077 not defined by /etc/devfs.rules" sh -c '! grep -qs "=6077\]" /etc/devfs.rules'

bun=${BUN:-$(command -v bun || true)}
[ -n "$bun" ] || [ ! -x .tools/bin/bun ] || bun=.tools/bin/bun
need "bun found ($bun)" test -x "$bun"
zig=${ZIG:-$(command -v zig || true)}
[ -n "$zig" ] || [ ! -x .tools/bin/zig ] || zig=.tools/bin/zig
need "zig found ($zig)" test -x "$zig"
if [ "$fails" -gt 0 ]; then
  echo "freebsd-selftest: $fails host check(s) failed; fix them first" >&2
  exit 1
fi

case $(uname -m) in
  amd64) triple=x86_64-freebsd.14.0 ;;
  arm64) triple=aarch64-freebsd.14.0 ;;
  *) echo "freebsd-selftest: no build for $(uname -m)" >&2; exit 1 ;;
esac
say info "building the shim for $triple"
(cd zig && "$zig" build -Dtarget="$triple" -Doptimize=ReleaseSafe) || { say FAIL "build the shim"; exit 1; }
say ok "build the shim"
[ -d node_modules ] || "$bun" install --frozen-lockfile >/dev/null || { say FAIL "bun install"; exit 1; }

state=$(mktemp -d /var/tmp/lj-selftest.XXXXXX)
cleanup() {
  # Whatever a failed check left: jails, their RCTL rules, mounts under the state root.
  for j in $(jls name 2>/dev/null | grep '^ljst'); do jail -r "$j" >/dev/null 2>&1; done
  for r in $(rctl 2>/dev/null | grep '^jail:ljst' | cut -d: -f1-2 | sort -u); do rctl -r "$r" >/dev/null 2>&1; done
  ifconfig lo0 inet 127.0.0.77 -alias >/dev/null 2>&1
  under() { mount -p | awk -v p="$state/" 'index($2, p) == 1 { print $2 }' | sort -r; }
  under | while read -r m; do umount -f "$m"; done
  # Never a recursive removal through a mount (it would delete what is mounted there).
  if [ -n "$(under)" ]; then
    echo "freebsd-selftest: kept $state, still mounted: $(under | tr '\n' ' ')" >&2
  else
    rm -rf "$state" "$state-sibling"
  fi
}
trap cleanup EXIT INT TERM
LIGHTJAIL_ROOT=$state LJ_SHIM=$here/zig/zig-out/lib/liblightjail.so "$bun" scripts/freebsd-selftest.ts
