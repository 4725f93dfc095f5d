/**
 * The command line before citty sees it: `lj config [APP]` lists variables (citty would read
 * APP as a subcommand), and a mistyped command gets a "did you mean" instead of citty's bare
 * "Unknown command".
 */
import type { CommandDef } from "citty";
import { usageError } from "../errors.ts";

/** Edit distance (insertions, deletions, substitutions, adjacent swaps). */
export function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** The names close to `word`: within two edits (one for short words), or starting with it. */
export function closest(word: string, names: string[]): string[] {
  const limit = word.length <= 3 ? 1 : 2;
  const scored = names
    .map((n) => ({ n, d: n.startsWith(word) && word.length >= 2 ? 0.5 : distance(word, n) }))
    .filter((x) => x.d <= limit)
    .sort((a, b) => a.d - b.d || a.n.localeCompare(b.n));
  return scored.map((x) => x.n);
}

type Subs = Record<string, CommandDef | (() => Promise<CommandDef>)>;

async function subsOf(cmd: CommandDef): Promise<Subs | undefined> {
  const s = typeof cmd.subCommands === "function" ? await cmd.subCommands() : cmd.subCommands;
  return s as Subs | undefined;
}

/** Flags of a command that take a value (their value is not a command word). */
async function valueFlags(cmd: CommandDef): Promise<Set<string>> {
  const args = (typeof cmd.args === "function" ? await cmd.args() : cmd.args) ?? {};
  const out = new Set<string>();
  for (const [k, def] of Object.entries(
    args as Record<string, { type?: string; alias?: string | string[] }>,
  )) {
    if (def.type !== "string" && def.type !== "enum") continue;
    out.add(`--${k}`);
    for (const a of [def.alias ?? []].flat()) out.add(a.length === 1 ? `-${a}` : `--${a}`);
  }
  return out;
}

/** The subcommand word of `argv` at `cmd`'s level: its index, or -1. */
async function commandWord(cmd: CommandDef, argv: string[]): Promise<number> {
  const takesValue = await valueFlags(cmd);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") return -1;
    if (a.startsWith("-")) {
      if (!a.includes("=") && takesValue.has(a)) i++;
      continue;
    }
    return i;
  }
  return -1;
}

/** Where a command's first word is an app, not one of its subcommands: the default to run. */
const APP_DEFAULTS: Record<string, string> = { config: "get" };

/**
 * Checks every command word of `argv` against the command tree (throwing a usage error that
 * suggests the nearest names) and returns argv with implied subcommands filled in.
 */
export async function normaliseArgv(
  root: CommandDef,
  argv: string[],
  path: string[] = [],
): Promise<string[]> {
  const subs = await subsOf(root);
  if (!subs || Object.keys(subs).length === 0) return argv;
  const i = await commandWord(root, argv);
  const name = (root.meta as { name?: string } | undefined)?.name ?? "";
  const implied = path.length > 0 ? APP_DEFAULTS[name] : undefined;
  const word = i < 0 ? undefined : argv[i]!;
  if (word === undefined || !(word in subs)) {
    const near = word === undefined ? [] : closest(word, Object.keys(subs));
    // `lj config APP`: APP is the app unless it is a near miss of a subcommand.
    if (implied && (word === undefined || near.length === 0)) {
      const at = i < 0 ? argv.length : i;
      return normaliseArgv(root, [...argv.slice(0, at), implied, ...argv.slice(at)], path);
    }
    if (word === undefined) return argv; // citty prints the usage or runs the command itself
    const cmdline = ["lj", ...path].join(" ");
    throw usageError(
      `"${word}" is not a command of ${cmdline}`,
      near.length > 0
        ? `did you mean ${near.map((n) => `\`${cmdline} ${n}\``).join(" or ")}?`
        : `\`${cmdline} --help\` lists them`,
    );
  }
  const sub = subs[word]!;
  const next = typeof sub === "function" ? await sub() : sub;
  const rest = await normaliseArgv(next, argv.slice(i + 1), [...path, word]);
  return [...argv.slice(0, i + 1), ...rest];
}
