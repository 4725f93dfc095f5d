#!/usr/bin/env bun
/**
 * Entry point of `lj` (and, through ljspawn.ts, of `ljspawn`). `lj spawn` takes a lean path
 * that loads only the jail code, since a cold spawn is dominated by start-up; every other
 * command goes through the citty command tree in main.ts.
 */
export async function runEntry(argv: string[], prog = "lj"): Promise<number> {
  const dash = argv.indexOf("--");
  const flags = dash < 0 ? argv : argv.slice(0, dash);
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

if (import.meta.main) runEntry(process.argv.slice(2)).then((code) => process.exit(code));
