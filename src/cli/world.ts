import { defineCommand } from "citty";
import { createConsola } from "consola";
import { createWorld } from "../build/worlds.ts";
import { assertWorldUnused } from "../store/world-users.ts";
import {
  defaultWorld,
  listWorlds,
  removeWorld,
  setDefaultWorld,
  type WorldInfo,
  worldPath,
} from "../store/worlds.ts";
import { confirmArg, confirmName } from "./confirm.ts";

/**
 * `lj world ...`: worlds are base systems. Data goes to stdout (tables, JSON, names); progress
 * and confirmations go to stderr so scripts can pipe the output. Errors are thrown as LjError
 * and printed by the root CLI.
 */

const log = createConsola({ stdout: process.stderr, stderr: process.stderr });
const out = (text: string) => process.stdout.write(`${text}\n`);
/** What the user must know whatever consola's level (it hides info under test runners). */
const note = (text: string) => process.stderr.write(`${text}\n`);

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

const worldJson = (w: WorldInfo) => ({
  name: w.name,
  path: w.path,
  default: w.isDefault,
  source: w.meta?.source ?? null,
  createdAt: w.meta?.createdAt ?? null,
  mounts: w.meta?.mounts ?? [],
});

const list = defineCommand({
  meta: { name: "list", description: "List worlds" },
  args: { json: { type: "boolean", description: "Print JSON" } },
  async run({ args }) {
    const worlds = await listWorlds();
    if (args.json) return out(JSON.stringify(worlds.map(worldJson), null, 2));
    if (worlds.length === 0) {
      log.info("no worlds yet; create one with `lj world create NAME --from host`");
      return;
    }
    const rows = [["NAME", "DEFAULT", "SOURCE", "CREATED"]];
    for (const w of worlds) {
      rows.push([w.name, w.isDefault ? "*" : "", w.meta?.source ?? "-", w.meta?.createdAt ?? "-"]);
    }
    out(table(rows));
  },
});

const create = defineCommand({
  meta: { name: "create", description: "Create a world" },
  args: {
    name: { type: "positional", required: true, description: "World name ([A-Za-z0-9._-])" },
    from: {
      type: "string",
      required: true,
      description: "host | debootstrap[:SUITE] | tar:FILE | freebsd:RELEASE",
    },
    force: { type: "boolean", description: "Replace a world of the same name" },
    mirror: {
      type: "string",
      description: "Debian mirror for debootstrap (default: the host's apt sources)",
    },
  },
  async run({ args }) {
    const before = await defaultWorld().catch(() => undefined);
    log.start(`creating world ${args.name} from ${args.from}`);
    const w = await createWorld(args.name, args.from, {
      force: args.force,
      mirror: args.mirror,
      onProgress: (line) => log.log(line),
    });
    log.success(`world ${w.name} is ready at ${w.path}`);
    await settleDefault(before, w.name);
    out(w.name);
  },
});

/**
 * The only world is the default without being named so; a second one would leave none. So the
 * default a user had stays the default (written down), and a first world is said to be it.
 */
async function settleDefault(before: string | undefined, created: string): Promise<void> {
  if (before !== undefined && before !== created) {
    await setDefaultWorld(before);
    note(`the default world is still ${before} (\`lj world default ${created}\` changes it)`);
    return;
  }
  const now = await defaultWorld().catch(() => undefined);
  if (now === created && before === undefined) note(`${created} is the default world`);
}

const rm = defineCommand({
  meta: { name: "rm", description: "Remove a world" },
  args: {
    name: { type: "positional", required: true, description: "World name" },
    force: { type: "boolean", description: "Remove it even if it is the default world" },
    ...confirmArg,
  },
  async run({ args }) {
    // Refusals first (in use, the default), so nobody confirms what cannot be done.
    worldPath(args.name);
    assertWorldUnused(args.name);
    await confirmName("world", args.name, args.confirm, "its files, for every jail that would start from it");
    await removeWorld(args.name, { force: args.force });
    log.success(`removed world ${args.name}`);
  },
});

const defaultCmd = defineCommand({
  meta: { name: "default", description: "Show the default world, or set it" },
  args: { name: { type: "positional", required: false, description: "World to make the default" } },
  async run({ args }) {
    if (args.name) {
      await setDefaultWorld(args.name);
      log.success(`default world is now ${args.name}`);
      return;
    }
    out(await defaultWorld());
  },
});

export const worldCommand = defineCommand({
  meta: { name: "world", description: "Manage worlds (base systems jails start from)" },
  subCommands: { list, create, rm, default: defaultCmd },
});
