#!/usr/bin/env bash
# A pure cgroup v2 Linux guest for the jail tests. Our machines run cgroup v1 (hybrid), most
# users run pure v2, so `./lj test` also runs the jail tests in a QEMU guest booted with
# `cgroup_no_v1=all`. Everything comes from Debian packages: the kernel (linux-image-amd64, as
# installed on this host), the root (debootstrap minbase), QEMU (qemu-system-x86).
#
#   scripts/cgroup2-guest.sh image            build the guest image unless the cached one is
#                                             current; print its path
#   scripts/cgroup2-guest.sh run -- CMD...    run CMD (as root, in a copy of this checkout) in
#                                             the guest; its output streams here, the script
#                                             exits with CMD's status
#
# The image (kernel modules + Debian root, ext4) is cached in $LJ_GUEST_CACHE (default
# /var/cache/lightjail-test-worlds/cgroup2-guest) under a key of its inputs, and is read-only
# to the guest (QEMU snapshot). Each run packs the checkout, the Bun binary, the npm
# dependencies and the shim built for a baseline CPU (`-cpu max` under TCG lacks some host
# features) into a second, throwaway disk. The guest has no network device at all: the tests
# make their own namespaces. Its console (the command's output) is kept in the cache directory
# as last-run.log. KVM is used when a probe boot shows it works; otherwise software emulation.
#
# Environment: LJ_GUEST_ACCEL=kvm|tcg (skip the probe), LJ_GUEST_TIMEOUT (seconds, default
# 1800), LJ_GUEST_STALL (seconds without output before the guest lists its processes, 300),
# LJ_GUEST_MEM (MiB, default 3072), LJ_GUEST_CPUS (default: this machine's, at most 4),
# LJ_GUEST_ENV (names of variables to pass into the guest), LJ_DEBIAN_MIRROR.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${LJ_GUEST_CACHE:-${LJ_TEST_WORLD_CACHE:-/var/cache/lightjail-test-worlds}/cgroup2-guest}
suite=bookworm
# kmod: modprobe for overlay and friends; bubblewrap: the spawn benchmark's peer; the rest is
# what the jail tests run in the host world.
packages=(kmod iproute2 nftables procps util-linux python3 perl xz-utils ca-certificates bubblewrap)
# Bump when the image is built differently (the key also covers the kernel and packages).
image_version=2
# Exit status when the guest itself failed (no result from the command).
GUEST_FAILED=3

say() { printf '\033[1;34m[guest]\033[0m %s\n' "$*" >&2; }
die() {
  printf 'cgroup2-guest: %s\n' "$1" >&2
  [ -z "${2:-}" ] || printf '  hint: %s\n' "$2" >&2
  exit "$GUEST_FAILED"
}

check_host() {
  [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ] ||
    die "the cgroup v2 guest runs on x86_64 Linux hosts only (this is $(uname -s) $(uname -m))"
  [ "$(id -u)" = 0 ] || die "the cgroup v2 guest needs root (debootstrap, and the jail tests in it)"
  qemu-system-x86_64 --version >/dev/null 2>&1 ||
    die "qemu-system-x86_64 is not installed (or does not run)" "apt-get install qemu-system-x86 (scripts/bootstrap.sh does)"
  local t
  for t in debootstrap mkfs.ext4 flock timeout; do
    command -v "$t" >/dev/null || die "$t is not installed" "apt-get install debootstrap e2fsprogs util-linux coreutils"
  done
}

# The newest Debian kernel in /boot that has its initrd and modules: sets kver, vmlinuz, initrd.
find_kernel() {
  local k v
  kver=
  for k in $(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V); do
    v=${k#/boot/vmlinuz-}
    [ -f "/boot/initrd.img-$v" ] && [ -d "/lib/modules/$v/kernel" ] && kver=$v
  done
  [ -n "$kver" ] || die "no Debian kernel (with initrd and modules) in /boot" \
    "apt-get install linux-image-amd64 (scripts/bootstrap.sh does)"
  vmlinuz=/boot/vmlinuz-$kver
  initrd=/boot/initrd.img-$kver
}

image_key() {
  {
    echo "$image_version $suite ${packages[*]} $kver"
    stat -c '%s %Y' "$vmlinuz" "$initrd"
    cat "$here/test/guest/stub-init"
  } | sha256sum | cut -c1-16
}

mirror() {
  if [ -n "${LJ_DEBIAN_MIRROR:-}" ]; then echo "$LJ_DEBIAN_MIRROR"; return; fi
  # The one the host's apt uses (the only one this machine may reach), as lj world create finds it.
  (cd "$here" && "$here/.tools/bin/bun" -e \
    "import { debianMirror } from './src/build/worlds.ts'; console.log(debianMirror('$suite'))")
}

build_image() {
  local image=$1 tmp="$cache/build.$$" started=$SECONDS
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  local from
  from=$(mirror)
  say "building the guest image: debootstrap $suite from $from (kernel $kver)"
  if ! debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
    "$suite" "$tmp/root" "$from" >"$tmp/debootstrap.log" 2>&1; then
    tail -n 20 "$tmp/debootstrap.log" >&2
    die "debootstrap failed (log above)" "check that $from is reachable, or set LJ_DEBIAN_MIRROR"
  fi
  mkdir -p "$tmp/root/lib/modules"
  cp -a "/lib/modules/$kver" "$tmp/root/lib/modules/"
  install -m 755 "$here/test/guest/stub-init" "$tmp/root/sbin/lj-guest-init"
  echo lj-guest >"$tmp/root/etc/hostname"
  rm -rf "$tmp"/root/var/cache/apt/archives/*.deb "$tmp"/root/var/lib/apt/lists/*
  say "packing the root filesystem (mkfs.ext4 -d)"
  truncate -s 8G "$tmp/root.img"
  mkfs.ext4 -q -F -L lj-guest -d "$tmp/root" "$tmp/root.img"
  mv "$tmp/root.img" "$image"
  rm -rf "$tmp"
  trap - EXIT
  for old in "$cache"/root-*.img; do [ "$old" = "$image" ] || rm -f "$old"; done
  say "guest image ready in $((SECONDS - started)) s: $image"
}

# Sets image to the current image's path, building it first when missing.
ensure_image() {
  find_kernel
  mkdir -p "$cache"
  image="$cache/root-$(image_key).img"
  [ -f "$image" ] && return 0
  # One builder at a time; runs hold the lock shared, so no image goes while a guest uses it.
  exec 8>"$cache/lock"
  flock -x 8
  [ -f "$image" ] || build_image "$image"
  flock -u 8
}

# The per-run disk: this checkout, Bun, the npm dependencies, the shim built for a baseline CPU
# and the static test programs, plus the guest's init, the command and its environment.
make_payload() {
  local dir=$1 stage="$1/payload" repo="$1/payload/repo"
  mkdir -p "$repo/.tools/bin" "$stage/guest"
  tar -C "$here" --exclude=./.git --exclude=./.tools --exclude=./node_modules \
    --exclude=./zig/zig-out --exclude=./zig/.zig-cache --exclude=./.lj-test -cf - . | tar -C "$repo" -xf -
  # Only what runs: the linters and the compiler are for checks on the host.
  tar -C "$here/node_modules/" --exclude=./@biomejs --exclude=./typescript -chf - . |
    (mkdir -p "$repo/node_modules" && tar -C "$repo/node_modules" -xf -)
  cp -L "$here/.tools/bin/bun" "$repo/.tools/bin/bun"
  (cd "$here/zig" && "$here/.tools/bin/zig" build -Doptimize=ReleaseSafe -Dcpu=baseline --prefix "$repo/zig/zig-out") ||
    die "building the shim for a baseline CPU failed"
  # The tests' C programs (buildProbe), made here: Zig in the guest would spend minutes on libc.
  local c rel
  while IFS= read -r c; do
    rel=${c#"$here/test/fixtures/"}
    mkdir -p "$repo/.lj-probes/$(dirname "$rel")"
    "$here/.tools/bin/zig" cc -target x86_64-linux-musl -static -O2 -o "$repo/.lj-probes/${rel%.c}" "$c" ||
      die "building $rel failed"
  done < <(find "$here/test/fixtures" -name '*.c')
  install -m 755 "$here/test/guest/init.sh" "$stage/guest/init.sh"
  printf '%s\n' "$GUEST_CMD" >"$stage/guest/cmd"
  {
    echo "export LJ_TEST_PROBE_DIR=/lj/repo/.lj-probes"
    # Everything is slower under emulation: tests stretch their own timeouts by this much.
    echo "export LJ_TEST_TIMEOUT_SCALE=${LJ_TEST_TIMEOUT_SCALE:-4}"
    local v
    for v in CI LJ_REQUIRE_ROOT_TESTS LJ_GUEST_STALL ${LJ_GUEST_ENV:-}; do
      [ -z "${!v+x}" ] || printf 'export %s=%q\n' "$v" "${!v}"
    done
  } >"$stage/guest/env"
  local mib
  mib=$(($(du -sm "$stage" | cut -f1) * 2 + 256))
  truncate -s "${mib}M" "$dir/payload.img"
  mkfs.ext4 -q -F -L lj-payload -d "$stage" "$dir/payload.img"
  rm -rf "$stage"
}

# Boots the guest on payload $2 with accel $1, console to $3; waits at most $4 seconds.
boot() {
  local accel=$1 payload=$2 console=$3 limit=$4 cpu=max cpus mem=${LJ_GUEST_MEM:-3072}
  cpus=${LJ_GUEST_CPUS:-$(nproc)}
  [ "$cpus" -le 4 ] || cpus=4
  local accel_opt="tcg,thread=multi"
  if [ "$accel" = kvm ]; then accel_opt=kvm; cpu=host; fi
  # loglevel=1: the kernel's OOM reports (the tests cause them) stay out of the test output.
  timeout --kill-after=10 "$limit" qemu-system-x86_64 -nodefaults -no-user-config -no-reboot \
    -accel "$accel_opt" -cpu "$cpu" -smp "$cpus" -m "$mem" -display none -nic none \
    -chardev "file,id=con,path=$console" -serial chardev:con \
    -device virtio-rng-pci \
    -kernel "$vmlinuz" -initrd "$initrd" \
    -append "root=/dev/vda rw console=ttyS0 cgroup_no_v1=all init=/sbin/lj-guest-init panic=-1 quiet loglevel=1" \
    -drive "file=$image,format=raw,if=virtio,snapshot=on" \
    -drive "file=$payload,format=raw,if=virtio" </dev/null
}

# KVM is preferred, but these machines' /dev/kvm hangs the Debian kernel: a short probe boot
# decides, once per kernel, host kernel and QEMU.
pick_accel() {
  if [ -n "${LJ_GUEST_ACCEL:-}" ]; then echo "$LJ_GUEST_ACCEL"; return; fi
  [ -w /dev/kvm ] || { echo tcg; return; }
  local key file
  key=$( (echo "$kver $(uname -r)"; qemu-system-x86_64 --version | head -n1) | sha256sum | cut -c1-16)
  file="$cache/accel-$key"
  if [ ! -f "$file" ]; then
    say "probing KVM (a 45 s boot at most)"
    local probe
    probe="$cache/run.$BASHPID"
    mkdir -p "$probe"
    GUEST_CMD=true make_payload "$probe" >/dev/null
    if boot kvm "$probe/payload.img" "$probe/console.log" 45 >/dev/null 2>&1 &&
      grep -aq '^lj-guest-status: 0' "$probe/console.log"; then
      echo kvm >"$file"
    else
      echo tcg >"$file"
    fi
    rm -rf "$probe"
  fi
  cat "$file"
}

run_guest() {
  ensure_image
  exec 8>"$cache/lock"
  flock -s 8
  [ -f "$image" ] || die "the guest image went away while starting"
  local run accel started=$SECONDS status= old
  # What runs killed before they could clean up left (their payload disks are large).
  for old in "$cache"/run.*; do
    [ -d "$old" ] && ! kill -0 "${old##*.}" 2>/dev/null && rm -rf "$old"
  done
  run="$cache/run.$$"
  rm -rf "$run"
  mkdir -p "$run"
  # shellcheck disable=SC2064
  trap "rm -rf '$run'" EXIT
  accel=$(pick_accel)
  case "$accel" in kvm | tcg) ;; *) die "cannot tell how to run the guest (LJ_GUEST_ACCEL=kvm or tcg)" ;; esac
  local console="$run/console.log" limit=${LJ_GUEST_TIMEOUT:-1800} attempt qemu qstatus
  for attempt in 1 2; do
    say "packing this checkout for the guest"
    make_payload "$run"
    say "packed in $((SECONDS - started)) s"
    : >"$console"
    say "booting the cgroup v2 guest (kernel $kver, $accel, timeout ${limit} s): $*"
    boot "$accel" "$run/payload.img" "$console" "$limit" &
    qemu=$!
    # sed -u: line by line, as the guest prints (tr or grep would hold it back in blocks).
    tail -n +1 -F --pid="$qemu" "$console" 2>/dev/null | sed -u -e 's/\r$//' -e '/^lj-guest-status: /d' || true
    qstatus=0
    wait "$qemu" || qstatus=$?
    tr -d '\r' <"$console" >"$cache/last-run.log"
    status=$(grep -a '^lj-guest-status: [0-9]*' "$cache/last-run.log" | tail -n1 | tr -dc 0-9) || true
    [ -z "$status" ] || break
    [ "$qstatus" = 124 ] && say "the guest ran out of time (LJ_GUEST_TIMEOUT=$limit s)"
    say "the guest never reported a result (QEMU exit $qstatus); its console: $cache/last-run.log"
    # A guest that never came up (a boot problem, not the tests') gets one more try.
    if [ "$attempt" = 2 ] || grep -aq '^lj-guest: up' "$cache/last-run.log"; then exit "$GUEST_FAILED"; fi
    say "it never came up: booting it once more"
  done
  say "guest done in $((SECONDS - started)) s, status $status; its console: $cache/last-run.log"
  exit "$status"
}

main() {
  case "${1:-}" in
    image)
      check_host
      ensure_image
      echo "$image"
      ;;
    run)
      shift
      [ "${1:-}" = -- ] && shift
      [ $# -gt 0 ] || die "usage: $0 run -- COMMAND..."
      check_host
      GUEST_CMD=$(printf '%q ' "$@")
      run_guest "$@"
      ;;
    *) die "usage: $0 image | run -- COMMAND..." ;;
  esac
}

main "$@"
