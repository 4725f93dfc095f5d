import { defineCommand } from "citty";
import { LjError } from "../errors.ts";
import {
  findOverlays,
  gcOverlays,
  listOverlays,
  overlayLabel,
  overlayUsers,
  removeOverlay,
  type StoredOverlay,
} from "../store/overlays.ts";

const out = (t: string) => process.stdout.write(`${t}\n`);
const mib = (b: number) => `${(b / 1048576).toFixed(1)}M`;

function table(rows: string[][]): string {
  const w = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(w[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

function one(query: string): StoredOverlay {
  const found = findOverlays(query);
  if (found.length === 0)
    throw new LjError("not-found", "overlay-not-found", `no overlay matches ${JSON.stringify(query)}`, {
      hint: "`lj overlays list` shows them",
    });
  if (found.length > 1) {
    throw new LjError(
      "usage",
      "ambiguous-overlay",
      `${found.length} overlays match ${JSON.stringify(query)}: ${found.map((o) => overlayLabel(o.meta)).join(", ")}`,
      {
        hint: "use TYPE/NAME@VERSION, the id, or the path",
      },
    );
  }
  return found[0]!;
}

const list = defineCommand({
  meta: { name: "list", description: "List built overlays" },
  args: { json: { type: "boolean", description: "Print JSON" } },
  run({ args }) {
    const all = listOverlays();
    if (args.json)
      return out(
        JSON.stringify(
          all.map((o) => ({ ...o.meta, path: o.path })),
          null,
          2,
        ),
      );
    const rows = [["TYPE", "NAME", "VERSION", "WORLD", "SIZE", "ID", "PATH"]];
    for (const o of all)
      rows.push([
        o.meta.type,
        o.meta.name,
        o.meta.overlayVersion,
        o.meta.world,
        mib(o.meta.sizeBytes),
        o.meta.id,
        o.dir,
      ]);
    out(table(rows));
  },
});

const show = defineCommand({
  meta: { name: "show", description: "Show an overlay's metadata (TYPE/NAME[@VERSION], id or path)" },
  args: {
    overlay: { type: "positional", required: true, description: "TYPE/NAME[@VERSION], id or path" },
    log: { type: "boolean", description: "Print its build log" },
  },
  async run({ args }) {
    const o = one(args.overlay);
    if (args.log) return out(await Bun.file(`${o.dir}/build.log`).text());
    out(
      JSON.stringify(
        { ...o.meta, path: o.path, log: `${o.dir}/build.log`, usedBy: overlayUsers(o) },
        null,
        2,
      ),
    );
  },
});

const rm = defineCommand({
  meta: { name: "rm", description: "Remove an overlay" },
  args: {
    overlay: { type: "positional", required: true, description: "TYPE/NAME[@VERSION], id or path" },
    force: { type: "boolean", description: "Remove it even if slugs or overlays use it" },
  },
  async run({ args }) {
    const o = one(args.overlay);
    await removeOverlay(o, { force: args.force === true });
    process.stderr.write(`removed ${overlayLabel(o.meta)}\n`);
  },
});

const gc = defineCommand({
  meta: {
    name: "gc",
    description: "Remove overlays no slug (release) or overlay uses, and leftovers of interrupted builds",
  },
  args: { "dry-run": { type: "boolean", description: "Only say what would be removed" } },
  async run({ args }) {
    const r = await gcOverlays({ dryRun: args["dry-run"] === true });
    for (const x of r.removed) out(`${args["dry-run"] ? "would remove" : "removed"} ${x}`);
    for (const x of r.leftovers) out(`${args["dry-run"] ? "would remove" : "removed"} leftover ${x}`);
  },
});

export const overlaysCommand = defineCommand({
  meta: { name: "overlays", description: "Manage built overlays" },
  subCommands: { list, show, rm, gc },
});
