#!/bin/sh
# Cross-compiles the shim's FreeBSD backend for x86_64- and aarch64-freebsd.14.0 into a
# temporary prefix and checks what came out. The backend cannot run on Linux; this (and
# `zig build test`, which unit-tests its pure logic) is all CI can verify here.
#
#   scripts/cross-freebsd.sh            build both targets, check, remove the prefix
#   KEEP=1 scripts/cross-freebsd.sh     keep the prefix and print its path
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
zig=${ZIG:-$root/.tools/bin/zig}
prefix=$(mktemp -d "${TMPDIR:-/tmp}/lj-cross-freebsd.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
  trap 'echo "cross-freebsd: kept $prefix"' EXIT
else
  trap 'rm -rf "$prefix"' EXIT
fi

fail() {
  echo "cross-freebsd: $*" >&2
  exit 1
}

for target in x86_64-freebsd.14.0 aarch64-freebsd.14.0; do
  out=$prefix/$target
  (cd "$root/zig" && "$zig" build -Dtarget="$target" -Doptimize=ReleaseSafe --prefix "$out") ||
    fail "build for $target failed"
  lib=$out/lib/liblightjail.so
  [ -f "$lib" ] || fail "$target: $lib was not produced"
  magic=$(od -An -tx1 -N4 "$lib" | tr -d ' \n')
  [ "$magic" = 7f454c46 ] || fail "$target: $lib is not an ELF file"
  # Zig leaves EI_OSABI at 0 for shared objects; FreeBSD's own libraries are what mark it.
  grep -q 'libc\.so\.7' "$lib" || fail "$target: $lib does not link FreeBSD's libc.so.7"
  # e_machine (bytes 18-19, little-endian): 62 = x86-64, 183 = AArch64.
  machine=$(od -An -tu2 -j18 -N2 "$lib" | tr -d ' \n')
  case $target in
    x86_64-*) want=62 ;;
    aarch64-*) want=183 ;;
  esac
  [ "$machine" = "$want" ] || fail "$target: $lib has e_machine $machine, want $want"
  for sym in lj_abi_version lj_spawn lj_reap lj_unmount lj_cleanup lj_proc_start jail_set nmount rctl_add_rule getifaddrs; do
    grep -q "$sym" "$lib" || fail "$target: $lib does not mention $sym"
  done
  echo "cross-freebsd: $target ok ($(wc -c <"$lib") bytes)"
done
