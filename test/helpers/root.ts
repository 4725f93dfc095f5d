import { test } from "bun:test";

/**
 * Tests that need root (real jails, mounts, debootstrap). Elsewhere they skip, but when
 * LJ_REQUIRE_ROOT_TESTS=1 (set by CI) a skip would hide a gap, so a failing test stands in.
 */
export const isRoot = (): boolean => process.getuid?.() === 0;
export const rootTestsRequired = (): boolean => process.env.LJ_REQUIRE_ROOT_TESTS === "1";

/**
 * A test's own timeout, stretched by LJ_TEST_TIMEOUT_SCALE where everything is slower (the cgroup
 * v2 guest runs under software emulation: scripts/cgroup2-guest.sh).
 */
export function scaledTimeout(ms: number | undefined): number | undefined {
  const scale = Number(process.env.LJ_TEST_TIMEOUT_SCALE ?? "1");
  return ms === undefined || !(scale > 1) ? ms : Math.round(ms * scale);
}

export function rootTest(name: string, fn: () => unknown | Promise<unknown>, timeout?: number): void {
  if (isRoot()) {
    test(name, fn as () => Promise<void>, scaledTimeout(timeout));
  } else if (rootTestsRequired()) {
    test(name, () => {
      throw new Error(`"${name}" needs root; LJ_REQUIRE_ROOT_TESTS=1 turns this skip into a failure`);
    });
  } else {
    test.skip(name, fn as () => Promise<void>, timeout);
  }
}
