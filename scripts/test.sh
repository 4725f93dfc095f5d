#!/usr/bin/env bash
# The README's test command: static checks, then every test. As root (CI) the jail tests run
# for real; LJ_REQUIRE_ROOT_TESTS=1 (set by .ci/run) turns any root-only skip into a failure.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$here/.tools/bin:$PATH"
cd "$here"
"$here/scripts/check.sh" || { echo "checks failed"; exit 1; }
log=$(mktemp)
bun test --timeout 120000 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# bun prints " N pass" / " N fail" / " N skip"; CI reads one plain closing line.
pass=$(grep -E '^ *[0-9]+ pass$' "$log" | tail -n1 | tr -dc 0-9)
fail=$(grep -E '^ *[0-9]+ fail$' "$log" | tail -n1 | tr -dc 0-9)
skip=$(grep -E '^ *[0-9]+ skip$' "$log" | tail -n1 | tr -dc 0-9)
rm -f "$log"
pass=${pass:-0}; fail=${fail:-0}; skip=${skip:-0}
if [ "${LJ_REQUIRE_ROOT_TESTS:-}" = 1 ] && [ "$skip" != 0 ]; then
  echo "$skip test(s) were skipped, and LJ_REQUIRE_ROOT_TESTS=1 forbids skips"
  status=1
fi
[ "$pass" = 0 ] && status=1
echo "tests: $pass passed, $fail failed"
exit "$status"
