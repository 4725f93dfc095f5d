import { ExitCode, isLjError } from "../errors.ts";

/**
 * Prints an error as one message (plus a hint) and returns its sysexits code. With --json the
 * error is a JSON object on stdout ({"error": {code, message, hint}}), where the caller reads
 * the output it asked for.
 */
export function reportError(prog: string, e: unknown, debug: boolean, json = false): number {
  if (json) {
    const err = e as { name?: string; code?: string; message?: string };
    const body = isLjError(e)
      ? e.toJSON()
      : err?.name === "CLIError"
        ? { code: "usage", message: err.message ?? "" }
        : { code: "internal", message: `internal error: ${err?.message ?? String(e)}` };
    process.stdout.write(`${JSON.stringify({ error: body })}\n`);
    if (debug && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
    return isLjError(e) ? e.exitCode : err?.name === "CLIError" ? ExitCode.usage : ExitCode.software;
  }
  if (isLjError(e)) {
    process.stderr.write(`${prog}: ${e.message}\n`);
    if (e.hint) process.stderr.write(`  hint: ${e.hint}\n`);
    if (debug && e.stack) process.stderr.write(`${e.stack}\n`);
    return e.exitCode;
  }
  const err = e as { name?: string; code?: string; message?: string };
  if (err?.name === "CLIError" || err?.code === "E_UNKNOWN_COMMAND" || err?.code === "E_NO_COMMAND") {
    process.stderr.write(`${prog}: ${err.message}\n  hint: ${prog} --help lists the commands\n`);
    return ExitCode.usage;
  }
  process.stderr.write(`${prog}: internal error: ${err?.message ?? String(e)}\n`);
  if (debug && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
  return ExitCode.software;
}
