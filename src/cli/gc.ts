import { defineCommand } from "citty";
import { LjError } from "../errors.ts";
import { gc } from "../jail/gc.ts";

export const gcCommand = defineCommand({
  meta: { name: "gc", description: "Remove what jails of dead owners left behind (cgroups, mounts)" },
  args: { json: { type: "boolean", description: "print the report as JSON" } },
  async run({ args }) {
    const report = await gc();
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
