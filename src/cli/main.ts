#!/usr/bin/env bun
/**
 * The `lj` command: a thin layer over the library. Every error is an LjError, printed as one
 * message (plus a hint) and turned into its sysexits code; stacks only with --debug.
 */
import { type CommandDef, defineCommand, runCommand, showUsage } from "citty";
import pkg from "../../package.json" with { type: "json" };
import { ExitCode } from "../errors.ts";
import { reportError } from "./report.ts";

export const main: CommandDef = defineCommand({
  meta: {
    name: "lj",
    version: pkg.version,
    description: "lightjail: ephemeral jails, overlays and a small PaaS",
  },
  subCommands: {
    spawn: () => import("./spawn.ts").then((m) => m.spawnCommand),
    world: () => import("./world.ts").then((m) => m.worldCommand),
    gc: () => import("./gc.ts").then((m) => m.gcCommand),
    serve: () => import("./serve.ts").then((m) => m.serveCommand),
    apps: () => import("./apps.ts").then((m) => m.appsCommand),
    deploy: () => import("./deploy.ts").then((m) => m.deployCommand),
    config: () => import("./config.ts").then((m) => m.configCommand),
    ps: () => import("./ps.ts").then((m) => m.psCommand),
    scale: () => import("./scale.ts").then((m) => m.scaleCommand),
    restart: () => import("./restart.ts").then((m) => m.restartCommand),
    logs: () => import("./logs.ts").then((m) => m.logsCommand),
    releases: () => import("./releases.ts").then((m) => m.releasesCommand),
    rollback: () => import("./rollback.ts").then((m) => m.rollbackCommand),
    run: () => import("./run.ts").then((m) => m.runCommand),
    services: () => import("./services.ts").then((m) => m.servicesCommand),
    domains: () => import("./domains.ts").then((m) => m.domainsCommand),
    build: () => import("./build.ts").then((m) => m.buildCommand),
    "build-app": () => import("./build.ts").then((m) => m.buildAppCommand),
    plan: () => import("./plan.ts").then((m) => m.planCommand),
    plugins: () => import("./plugins.ts").then((m) => m.pluginsCommand),
    overlays: () => import("./overlays.ts").then((m) => m.overlaysCommand),
    login: () => import("./login.ts").then((m) => m.loginCommand),
    logout: () => import("./login.ts").then((m) => m.logoutCommand),
    servers: () => import("./login.ts").then((m) => m.serversCommand),
    "git-credential": () => import("./login.ts").then((m) => m.gitCredentialCommand),
    node: () => import("./node.ts").then((m) => m.nodeCommand),
    completion: () => import("./completion.ts").then((m) => m.completionCommand(main)),
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
    const { normaliseArgv } = await import("./suggest.ts");
    await runCommand(main, { rawArgs: await normaliseArgv(main, argv) });
    return Number(process.exitCode ?? 0);
  } catch (e) {
    return reportError(prog, e, debug, flags.includes("--json"));
  }
}
