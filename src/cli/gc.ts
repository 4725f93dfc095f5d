import { existsSync } from "node:fs";
import { defineCommand } from "citty";
import { LjError } from "../errors.ts";
import { type GcReport, gc } from "../jail/gc.ts";
import { PaasDb } from "../paas/db.ts";
import { collectSlugLeftovers } from "../paas/leftovers.ts";
import { paths } from "../store/paths.ts";

/** Build temporaries of dead builders and unused slugs (src/paas/leftovers.ts). */
function collectPaasLeftovers(report: GcReport): void {
  const db = existsSync(paths.paasDb()) ? new PaasDb(paths.paasDb()) : null;
  try {
    collectSlugLeftovers(report, db);
  } finally {
    db?.close();
  }
}

export const gcCommand = defineCommand({
  meta: {
    name: "gc",
    description:
      "Remove what dead owners left behind: jails' cgroups, mounts, leases; builds' temporaries; unused slugs",
  },
  args: { json: { type: "boolean", description: "print the report as JSON" } },
  async run({ args }) {
    const report = await gc();
    collectPaasLeftovers(report);
    if (args.json) {
      process.stdout.write(`${JSON.stringify(report)}\n`);
    } else {
      for (const r of report.removed) process.stdout.write(`removed ${r.kind} ${r.what}\n`);
      for (const e of report.errors)
        process.stderr.write(`could not remove ${e.kind} ${e.what}: ${e.error}\n`);
      if (report.removed.length === 0 && report.errors.length === 0)
        process.stdout.write("nothing to clean\n");
    }
    if (report.errors.length > 0) {
      throw new LjError(
        "isolation",
        "gc-incomplete",
        `${report.errors.length} leftover(s) could not be removed`,
      );
    }
  },
});
