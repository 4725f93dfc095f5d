#!/usr/bin/env bash
# Static checks: TypeScript (strict), Biome (lint + format), zig fmt, the shim's Zig unit
# tests, and the FreeBSD cross builds. Run by scripts/test.sh and `bun run check`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$here/.tools/bin:$PATH"
cd "$here"
if [ -t 2 ] && [ -z "${NO_COLOR:-}" ]; then
  step() { printf '\033[1;34m[check]\033[0m %s\n' "$*" >&2; }
else
  step() { printf '[check] %s\n' "$*" >&2; }
fi
step "tsc --noEmit"
bun x tsc --noEmit -p .
step "biome check"
bun x biome check --error-on-warnings .
step "zig fmt --check"
zig fmt --check zig/src zig/build.zig
step "zig build test"
(cd zig && zig build test)
if [ -x scripts/cross-freebsd.sh ]; then
  step "cross-compile the shim for FreeBSD"
  scripts/cross-freebsd.sh
fi
