#!/usr/bin/env bun
/**
 * The `lj` command: a thin layer over the library. Every error is an LjError, printed as one
 * message (plus a hint) and turned into its sysexits code; stacks only with --debug.
 */
import { type CommandDef, defineCommand, runCommand, showUsage } from "citty";
import pkg from "../../package.json" with { type: "json" };
import { ExitCode } from "../errors.ts";
import { reportError } from "./report.ts";

export const main = defineCommand({
  meta: {
    name: "lj",
    version: pkg.version,
    description: "lightjail: ephemeral jails, overlays and a small PaaS",
  },
  subCommands: {
    spawn: () => import("./spawn.ts").then((m) => m.spawnCommand),
    world: () => import("./world.ts").then((m) => m.worldCommand),
    gc: () => import("./gc.ts").then((m) => m.gcCommand),
  },
});

function beforeDashDash(argv: string[]): string[] {
  const i = argv.indexOf("--");
  return i < 0 ? argv : argv.slice(0, i);
}

async function findSub(cmd: CommandDef, args: string[]): Promise<[CommandDef, CommandDef | undefined]> {
  let current = cmd;
  let parent: CommandDef | undefined;
  for (const a of args) {
    if (a.startsWith("-")) continue;
    const subs = (
      typeof current.subCommands === "function" ? await current.subCommands() : current.subCommands
    ) as Record<string, CommandDef | (() => Promise<CommandDef>)> | undefined;
    const next = subs?.[a];
    if (!next) break;
    parent = current;
    current = typeof next === "function" ? await next() : next;
  }
  return [current, parent];
}

export async function runCli(argv: string[], prog = "lj"): Promise<number> {
  const flags = beforeDashDash(argv);
  const debug = flags.includes("--debug");
  try {
    if (flags.includes("--help") || flags.includes("-h")) {
      if (flags[0] === "spawn" || prog === "ljspawn") {
        const { SPAWN_USAGE } = await import("./spawn-args.ts");
        process.stdout.write(`${SPAWN_USAGE}\n`);
      } else {
        const [cmd, parent] = await findSub(main, flags);
        await showUsage(cmd, parent);
      }
      return 0;
    }
    if (flags.length === 1 && (flags[0] === "--version" || flags[0] === "-v")) {
      process.stdout.write(`${pkg.version}\n`);
      return 0;
    }
    if (argv.length === 0) {
      await showUsage(main);
      return ExitCode.usage;
    }
    process.exitCode = 0;
    await runCommand(main, { rawArgs: argv });
    return Number(process.exitCode ?? 0);
  } catch (e) {
    return reportError(prog, e, debug);
  }
}

if (import.meta.main) {
  import("./lj.ts").then(({ runEntry }) =>
    runEntry(process.argv.slice(2)).then((code) => process.exit(code)),
  );
}
