/**
 * Where slow jails lose their time: traced jails one after another, their totals' quantiles,
 * and each step's mean over the fastest and the slowest third side by side. A step that grows
 * with the others points at a shared CPU; one that grows alone, at that step.
 *
 *   bun bench/spawn-quantiles.ts [JAILS]      (default 600; LJ_SHIM picks another shim build)
 *
 * Needs root. Complements bench/spawn.ts (medians against peers) and bench/spawn-ab.ts (two
 * builds side by side): the sequential rate is lost in the slow tail, which medians hide.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnJail } from "../src/jail/spawn.ts";
import { benchJailSpec, makeMiniWorld } from "./mini-world.ts";

if (process.getuid?.() !== 0) {
  console.error("bench/spawn-quantiles.ts needs root (namespaces, mounts, cgroups)");
  process.exit(77);
}
const JAILS = Number(process.argv[2] ?? 600);
if (!Number.isInteger(JAILS) || JAILS < 30) {
  console.error("usage: bun bench/spawn-quantiles.ts [JAILS >= 30]");
  process.exit(64);
}

const root = mkdtempSync(join(tmpdir(), "lj-bench-"));
process.env.LIGHTJAIL_ROOT = root;
try {
  const spec = { ...benchJailSpec(makeMiniWorld(join(root, "worlds", "mini"))), trace: true };
  for (let i = 0; i < 50; i++) await spawnJail(spec).exited; // warm-up: page cache, JIT, pools
  const rows: { total: number; steps: Map<string, number> }[] = [];
  for (let i = 0; i < JAILS; i++) {
    const r = await spawnJail(spec).exited;
    if (r.status !== 0) throw new Error(`jail failed: ${JSON.stringify(r)}`);
    rows.push({ total: r.durationMs, steps: new Map((r.trace ?? []).map((s) => [s.step, s.ms])) });
  }
  rows.sort((a, b) => a.total - b.total);
  const at = (f: number) => rows[Math.min(rows.length - 1, Math.floor(rows.length * f))]!.total;
  const third = Math.floor(rows.length / 3);
  const fast = rows.slice(0, third);
  const slow = rows.slice(rows.length - third);
  const mean = (rs: typeof rows, step: string) =>
    rs.reduce((s, r) => s + (r.steps.get(step) ?? 0), 0) / rs.length;
  const pad = (s: string, n: number) => s.padEnd(n);
  const quantiles = { p10: at(0.1), p25: at(0.25), p50: at(0.5), p75: at(0.75), p90: at(0.9) };
  console.log(
    pad("total ms", 34),
    Object.entries(quantiles)
      .map(([k, v]) => `${k} ${v.toFixed(2)}`)
      .join("  "),
  );
  console.log(pad("step (mean ms)", 34), pad("fastest third", 15), "slowest third");
  const steps: Record<string, { fast: number; slow: number }> = {};
  for (const step of rows[0]!.steps.keys()) {
    steps[step] = { fast: mean(fast, step), slow: mean(slow, step) };
    console.log(pad(`  ${step}`, 34), pad(steps[step].fast.toFixed(3), 15), steps[step].slow.toFixed(3));
  }
  console.log(JSON.stringify({ jails: JAILS, total_ms: quantiles, steps }));
} finally {
  rmSync(root, { recursive: true, force: true });
}
