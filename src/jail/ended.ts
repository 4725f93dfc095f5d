/**
 * How a jail ended, in words: one wording wherever it is told (app processes, release
 * commands, builds, `lj spawn`). Signals go by name; these numbers are the same on Linux and
 * FreeBSD.
 */
import type { JailResult } from "./spawn.ts";

const SIGNAL_NAMES: Record<number, string> = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  6: "SIGABRT",
  9: "SIGKILL",
  11: "SIGSEGV",
  13: "SIGPIPE",
  15: "SIGTERM",
};

export const signalName = (n: number) => SIGNAL_NAMES[n] ?? `signal ${n}`;

/** What the jail was allowed, to say what it exceeded ("10 minutes", "512 MB"). */
export interface EndLimits {
  timeout?: string;
  memory?: string;
}

export function describeEnd(
  r: Pick<JailResult, "reason" | "exitCode" | "signal" | "error">,
  limits: EndLimits = {},
): string {
  switch (r.reason) {
    case "timeout":
      return limits.timeout ? `timed out after ${limits.timeout}` : "timed out";
    case "oom":
      return limits.memory ? `ran out of memory (limit ${limits.memory})` : "ran out of memory";
    case "setup":
      return `could not start: ${r.error}`;
  }
  return r.signal !== null ? `was killed by ${signalName(r.signal)}` : `exited with status ${r.exitCode}`;
}
