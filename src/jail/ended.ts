/**
 * How a jail ended, in words: one wording wherever it is told (app processes, release
 * commands, builds, `lj spawn`), kept in zig/src/endings.txt, which the native ljspawn tells
 * from too (zig/src/ended.zig).
 */
import endingsTable from "../../zig/src/endings.txt" with { type: "text" };
import type { JailResult } from "./spawn.ts";
import { tableWords } from "./table.ts";

const WORDS = tableWords(endingsTable);

const words = (key: string, fill: Record<string, string | number | null | undefined> = {}) =>
  WORDS.get(key)!.replace(/\{(\w+)\}/g, (_, name: string) => String(fill[name]));

export const signalName = (n: number) => WORDS.get(String(n)) ?? `signal ${n}`;

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
      return limits.timeout ? words("timeout-limit", { LIMIT: limits.timeout }) : words("timeout");
    case "oom":
      return limits.memory ? words("oom-limit", { LIMIT: limits.memory }) : words("oom");
    case "setup":
      return words("setup", { ERROR: r.error });
  }
  return r.signal !== null
    ? words("signal", { SIGNAL: signalName(r.signal) })
    : words("exit", { STATUS: r.exitCode });
}

/**
 * The line `lj spawn` leaves on stderr after its jail: none for an exit, nor for the signals
 * a terminal or a closed pipe sends (SIGINT, SIGPIPE), whose end the caller already knows.
 */
export function spawnEndLine(
  r: Pick<JailResult, "reason" | "exitCode" | "signal" | "error">,
  limits: EndLimits,
): string | null {
  if (r.reason === "exit" || r.reason === "setup") return null;
  if (r.reason === "signal" && (r.signal === 2 || r.signal === 13)) return null;
  return `the jail ${describeEnd(r, limits)}`;
}
