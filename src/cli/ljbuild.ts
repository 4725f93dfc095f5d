#!/usr/bin/env bun
/**
 * `ljbuild [Jailfile|DIR|NAME|URL]` (seed tool): builds an overlay recipe, by default the
 * Jailfile (or plugin.toml) in the current directory. Same engine as `lj build`.
 */
import { existsSync } from "node:fs";
import { parseArgs } from "node:util";
import { reportError } from "./report.ts";

const USAGE = `Usage: ljbuild [options] [Jailfile|DIR|NAME|URL[//SUBDIR]]

Builds an overlay from a recipe (default: ./Jailfile, else ./plugin.toml) in a jail over the
world and its parent overlays, and stores it under $LIGHTJAIL_ROOT/<type>s/<repo url>[/<subdir>].

  -t, --type TYPE    overlay type (default: the recipe's, else language)
  -w, --world NAME   world to build over
  -f, --force        rebuild even when an identical build exists
      --json         print the overlay's metadata as JSON
  -q, --quiet        do not stream the build log`;

export async function runLjbuild(argv: string[]): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        type: { type: "string", short: "t" },
        world: { type: "string", short: "w" },
        force: { type: "boolean", short: "f" },
        json: { type: "boolean" },
        quiet: { type: "boolean", short: "q" },
        help: { type: "boolean", short: "h" },
        debug: { type: "boolean" },
      },
    });
    if (values.help) {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    if (positionals.length > 1) {
      process.stderr.write(`ljbuild: give at most one recipe\n${USAGE}\n`);
      return 64;
    }
    const target = positionals[0] ?? (existsSync("Jailfile") ? "./Jailfile" : "./plugin.toml");
    const { buildTarget } = await import("./build-common.ts");
    await buildTarget(
      target.includes("/") || target === "Jailfile"
        ? target.startsWith("/") || target.startsWith(".")
          ? target
          : `./${target}`
        : target,
      values,
    );
    return 0;
  } catch (e) {
    const err = e as { code?: string; message?: string };
    if (typeof err.code === "string" && err.code.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`ljbuild: ${err.message}\n  hint: ljbuild --help\n`);
      return 64;
    }
    return reportError("ljbuild", e, argv.includes("--debug"));
  }
}

if (import.meta.main) runLjbuild(process.argv.slice(2)).then((code) => process.exit(code));
