import { test } from "bun:test";

/**
 * Tests that need root (real jails, mounts, debootstrap). Elsewhere they skip, but when
 * LJ_REQUIRE_ROOT_TESTS=1 (set by CI) a skip would hide a gap, so a failing test stands in.
 */
export const isRoot = (): boolean => process.getuid?.() === 0;
export const rootTestsRequired = (): boolean => process.env.LJ_REQUIRE_ROOT_TESTS === "1";

export function rootTest(name: string, fn: () => unknown | Promise<unknown>, timeout?: number): void {
  if (isRoot()) {
    test(name, fn as () => Promise<void>, timeout);
  } else if (rootTestsRequired()) {
    test(name, () => {
      throw new Error(`"${name}" needs root; LJ_REQUIRE_ROOT_TESTS=1 turns this skip into a failure`);
    });
  } else {
    test.skip(name, fn as () => Promise<void>, timeout);
  }
}
