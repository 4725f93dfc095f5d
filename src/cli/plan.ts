import { resolve } from "node:path";
import { defineCommand } from "citty";
import { planApp } from "../build/app.ts";

/** `lj plan DIR`: what would build this app, and how. */
export const planCommand = defineCommand({
  meta: {
    name: "plan",
    description: "Show how an app would be built: detected plugins, overlay chain, commands, cache, limits",
  },
  args: {
    dir: { type: "positional", required: true, description: "App source directory" },
    world: { type: "string", description: "World to plan for" },
    json: { type: "boolean", description: "Print the plan as JSON" },
  },
  async run({ args }) {
    const p = await planApp(resolve(args.dir), args.world ? { world: args.world } : {});
    if (args.json) {
      process.stdout.write(`${JSON.stringify(p, null, 2)}\n`);
      return;
    }
    const lines: string[] = [];
    lines.push(`app:       ${p.dir}`);
    lines.push("detected:");
    p.detected.forEach((d, i) => {
      lines.push(
        `  ${i === 0 ? "*" : " "} ${d.type}/${d.plugin}: ${d.reasons.join("; ")}${i === 0 ? "  (builds the app)" : ""}`,
      );
    });
    lines.push(`world:     ${p.world}`);
    lines.push(`overlays:  ${p.overlays.map((o) => `${o.type}/${o.name}@${o.version}`).join(" -> ")}`);
    lines.push(`build:     ${p.build.script}  (net ${p.build.net})`);
    if (Object.keys(p.build.env).length)
      lines.push(
        `build env: ${Object.entries(p.build.env)
          .map(([k, v]) => `${k}=${v}`)
          .join(" ")}`,
      );
    lines.push(
      `cache:     ${p.build.cacheDirs.join(", ") || "-"}${p.lockfiles.length ? `  (keyed by ${p.lockfiles.join(" | ")})` : ""}`,
    );
    lines.push("processes:");
    for (const [k, v] of Object.entries(p.processes)) lines.push(`  ${k}: ${v.command}`);
    if (Object.keys(p.env).length)
      lines.push(
        `env:       ${Object.entries(p.env)
          .map(([k, v]) => `${k}=${v}`)
          .join(" ")}`,
      );
    lines.push(
      `limits:    memory ${p.limits.memoryMb} MB, pids ${p.limits.pids}${p.limits.cpus ? `, cpus ${p.limits.cpus}` : ""}`,
    );
    process.stdout.write(`${lines.join("\n")}\n`);
  },
});
