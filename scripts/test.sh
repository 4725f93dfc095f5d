#!/usr/bin/env bash
# The README's test command: static checks, then every test on this host, then the jail tests
# again in a pure cgroup v2 guest (scripts/cgroup2-guest.sh) when this host is not pure v2, so
# both cgroup versions are covered. As root (CI) the jail tests run for real;
# LJ_REQUIRE_ROOT_TESTS=1 (set by .ci/run) turns any root-only skip into a failure.
# LJ_GUEST=0 leaves the guest out, LJ_GUEST=1 runs it even when test files are named.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$here/.tools/bin:$PATH"
cd "$here"
# The jail tests that run in the guest: the cgroup work (limits, OOM, CPU quota, gc, leftovers,
# clone3 into a cgroup), the jail core around it and user-namespaced jails (builds run in
# them), a few minutes under emulation. test/seccomp.test.ts runs the host's node, postgres and
# redis, which the guest has not: it stays on the host.
guest_tests=(test/jail.test.ts test/limits.test.ts test/userns.test.ts)

"$here/scripts/check.sh" || { echo "checks failed"; exit 1; }

# Reads bun's " N pass" / " N fail" / " N skip" lines from log $1 into pass, fail, skip.
counts() {
  pass=$(grep -aE '^ *[0-9]+ pass$' "$1" | tail -n1 | tr -dc 0-9)
  fail=$(grep -aE '^ *[0-9]+ fail$' "$1" | tail -n1 | tr -dc 0-9)
  skip=$(grep -aE '^ *[0-9]+ skip$' "$1" | tail -n1 | tr -dc 0-9)
  pass=${pass:-0}; fail=${fail:-0}; skip=${skip:-0}
}

# What each failed test printed (its error and the lines before it since the previous test's
# result, at most 40), from log $1 with label $2, appended to $failures: the whole run's
# failures are shown again at the end, where a reader of a long log's tail finds them.
failures=$(mktemp)
failure_details() {
  awk -v label="$2" '
    / tests? failed:$/ { exit } # bun lists the failed tests again at its end
    /^\((pass|skip|todo)\) / || /\.test\.ts:$/ { n = 0; next }
    /^\(fail\) / {
      print "---- " label ": " $0
      start = n > 40 ? n - 40 : 0
      for (i = start; i < n; i++) print buf[i % 40]
      n = 0
      next
    }
    { buf[n % 40] = $0; n++ }
  ' "$1" >>"$failures"
}

cgroup_version() {
  if grep -q ' - cgroup ' /proc/self/mountinfo 2>/dev/null; then echo 1
  elif grep -q ' - cgroup2 ' /proc/self/mountinfo 2>/dev/null; then echo 2
  else echo none; fi
}

# Whether to run the guest; sets guest_note to why not otherwise.
want_guest() {
  case "${LJ_GUEST:-}" in
    0) guest_note="left out (LJ_GUEST=0)"; return 1 ;;
    1) return 0 ;;
  esac
  if [ $# -gt 0 ]; then guest_note="left out, test files were named (LJ_GUEST=1 runs it)"; return 1; fi
  if [ "$(uname -s)" != Linux ]; then guest_note="not on $(uname -s)"; return 1; fi
  if [ "$host_cg" = 2 ]; then guest_note="not needed, this host is cgroup v2"; return 1; fi
  if [ "$(id -u)" != 0 ] && [ "${LJ_REQUIRE_ROOT_TESTS:-}" != 1 ]; then
    guest_note="left out, it needs root"
    return 1
  fi
  return 0
}

host_cg=$(cgroup_version)
log=$(mktemp)
trap 'rm -f "$log" "$failures"' EXIT
bun test --timeout 120000 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
counts "$log"
failure_details "$log" host
if [ "${LJ_REQUIRE_ROOT_TESTS:-}" = 1 ] && [ "$skip" != 0 ]; then
  echo "$skip test(s) were skipped, and LJ_REQUIRE_ROOT_TESTS=1 forbids skips"
  status=1
fi
[ "$pass" = 0 ] && status=1
summary=("host (cgroup $host_cg): $pass passed, $fail failed")
total_pass=$pass total_fail=$fail

if want_guest "$@"; then
  : >"$log"
  # In the guest everything is root, so no root-only test may skip there.
  LJ_REQUIRE_ROOT_TESTS=1 "$here/scripts/cgroup2-guest.sh" run -- \
    bun test --timeout 600000 "${guest_tests[@]}" 2>&1 | tee "$log"
  guest_status=${PIPESTATUS[0]}
  counts "$log"
  failure_details "$log" guest
  if [ "$skip" != 0 ]; then echo "$skip test(s) were skipped in the guest"; guest_status=1; fi
  # A guest that never ran its tests counts as one failure, so the summary shows it.
  if [ "$pass" = 0 ] && [ "$fail" = 0 ]; then fail=1; guest_status=1; fi
  [ "$guest_status" = 0 ] || status=1
  summary+=("guest (cgroup 2, QEMU; ${guest_tests[*]}): $pass passed, $fail failed")
  total_pass=$((total_pass + pass)) total_fail=$((total_fail + fail))
else
  summary+=("guest (cgroup 2): $guest_note")
fi

if [ -s "$failures" ]; then
  echo "==== what the failed tests printed"
  cat "$failures"
  echo "===="
fi
printf '%s\n' "${summary[@]}"
echo "tests: $total_pass passed, $total_fail failed"
exit "$status"
