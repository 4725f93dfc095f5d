#!/usr/bin/env bun
/**
 * Entry point of `lj` (and, through ljspawn.ts, of `ljspawn`). `lj spawn` takes a lean path
 * that loads only the jail code, since a cold spawn is dominated by start-up; every other
 * command goes through the citty command tree in main.ts.
 */
import { existsSync, readFileSync, realpathSync } from "node:fs";

/**
 * The arguments after the script, as given. Bun drops a `--` that comes first (`ljspawn --
 * CMD` would reach us as `CMD`, and a payload must follow `--`), so on Linux they are read back
 * from /proc/self/cmdline, after the script's own path.
 */
export function rawArgv(): string[] {
  const given = process.argv.slice(2);
  if (given[0] === "--") return given;
  try {
    const words = readFileSync("/proc/self/cmdline", "utf8").split("\0").slice(0, -1);
    const script = realpathSync(process.argv[1] ?? "");
    const at = words.findIndex((w, i) => i > 0 && existsSync(w) && realpathSync(w) === script);
    const rest = at < 0 ? undefined : words.slice(at + 1);
    // Only the dropped `--` may differ: anything else means the reading went wrong.
    if (rest && rest[0] === "--" && rest.length === given.length + 1) return rest;
  } catch {}
  return given;
}

/** Commands that make jails, mounts or the state root's files: only root may run them. */
const NEEDS_ROOT = new Set(["spawn", "world", "gc", "serve", "build", "build-app", "overlays", "node"]);

/**
 * Colours only where a person reads both streams. citty honours NO_COLOR=1 and consola any
 * NO_COLOR; both are read as they load, which is after this.
 */
function settleColour(): void {
  if (process.env.NO_COLOR || !process.stdout.isTTY || !process.stderr.isTTY) process.env.NO_COLOR = "1";
}

export async function runEntry(argv: string[], prog = "lj"): Promise<number> {
  const dash = argv.indexOf("--");
  const flags = dash < 0 ? argv : argv.slice(0, dash);
  settleColour();
  const help = flags.includes("--help") || flags.includes("-h");
  if (!help && NEEDS_ROOT.has(argv[0] ?? "") && process.getuid?.() !== 0) {
    const what = prog === "lj" ? ` for \`lj ${argv[0]}\`` : "";
    process.stderr.write(`${prog} needs root (sudo)${what}\n`);
    return 77;
  }
  if (argv[0] === "spawn" && !flags.includes("--help") && !flags.includes("-h")) {
    const { runSpawn } = await import("./spawn.ts");
    try {
      return await runSpawn(argv.slice(1), prog);
    } catch (e) {
      const { reportError } = await import("./report.ts");
      return reportError(prog, e, flags.includes("--debug"));
    }
  }
  const [{ runCli }, { consola }] = await Promise.all([import("./main.ts"), import("consola")]);
  consola.options.stdout = process.stderr;
  return runCli(argv, prog);
}

if (import.meta.main) runEntry(rawArgv()).then((code) => process.exit(code));
