/**
 * Destructive commands name what they destroy twice, as Heroku's do: `--confirm NAME`, or
 * typed at a prompt when stdin is a terminal. A script that forgets it fails instead of
 * destroying the wrong thing.
 */
import { LjError } from "../errors.ts";

export const confirmArg = {
  confirm: { type: "string", description: "the name again, to confirm (asked for when stdin is a terminal)" },
} as const;

/** Reads one line from stdin (the prompt's answer); null at end of input. */
async function readAnswer(): Promise<string | null> {
  for await (const line of console) return line;
  return null;
}

/**
 * Returns when `name` is confirmed: given as `--confirm`, or typed at the prompt. `what` is
 * "app", "service", "world"; `effect` says what goes.
 */
export async function confirmName(
  what: string,
  name: string,
  given: string | undefined,
  effect: string,
  tty = process.stdin.isTTY === true,
): Promise<void> {
  if (given !== undefined) {
    if (given === name) return;
    throw new LjError("usage", "confirm-mismatch", `--confirm ${given} does not name ${what} ${name}`, {
      hint: `pass --confirm ${name}`,
    });
  }
  if (!tty) {
    throw new LjError("usage", "confirm-needed", `destroying ${what} ${name} needs its name confirmed`, {
      hint: `pass --confirm ${name}`,
    });
  }
  process.stderr.write(` !  This destroys ${what} ${name}: ${effect}.\n !  To proceed, type ${name}: `);
  const answer = (await readAnswer())?.trim();
  if (answer !== name) {
    throw new LjError(
      "usage",
      "confirm-mismatch",
      `the confirmation did not match ${name}; nothing was destroyed`,
    );
  }
}
