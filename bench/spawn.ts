/**
 * Spawn benchmark: lightjail against its peers, side by side in one run on one machine.
 *
 *   warm   one /bin/true in a full jail through the TypeScript API (namespaces, overlayfs over
 *          a world, pivot_root, /proc, /dev, cgroup memory+pids limits, network none), against
 *          the same Bun process running `bwrap --unshare-all` and `unshare ... chroot`, and a
 *          plain Bun.spawn(["/bin/true"]) as the floor;
 *   pooled the same jail made ahead of time by a JailPool and started with its payload;
 *   rate   sequential and 2-way parallel jails per second (and sequential, pooled);
 *   cold   the `ljspawn -d WORLD -p true` command line (native, what `./lj spawn` runs on
 *          Linux) and the Bun CLI, against the `bwrap` command line.
 *
 * Rounds interleave the runners so a noisy neighbour hurts all of them alike. Then traced jails
 * (spec `trace`) show where a warm jail's time goes, step by step. Prints a table and, as its
 * last line, one JSON object with the medians, the ratios and the trace. Needs root.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { JailPool } from "../src/jail/pool.ts";
import { spawnJail } from "../src/jail/spawn.ts";
import { benchJailSpec, bwrapPeer, makeMiniWorld } from "./mini-world.ts";

if (process.getuid?.() !== 0) {
  console.error("bench/spawn.ts needs root (namespaces, mounts, cgroups)");
  process.exit(77);
}

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const PER_ROUND = Number(process.env.PER_ROUND ?? 40);
const COLD_PER_ROUND = Number(process.env.COLD_PER_ROUND ?? 6);

const root = mkdtempSync(join(tmpdir(), "lj-bench-"));
process.env.LIGHTJAIL_ROOT = root;
const world = makeMiniWorld(join(root, "worlds", "mini"));
const cli = resolve(import.meta.dir, "..", "src", "cli", "lj.ts");

const jailSpec = benchJailSpec(world);
const bwrap = bwrapPeer(world);
const unshare = ["unshare", "--mount", "--pid", "--net", "--uts", "--ipc", "--fork", "chroot", world];

async function jail(): Promise<void> {
  const r = await spawnJail(jailSpec).exited;
  if (r.status !== 0) throw new Error(`jail failed: ${JSON.stringify(r)}`);
}

async function proc(argv: string[]): Promise<void> {
  const p = Bun.spawn(argv, { stdio: ["ignore", "ignore", "inherit"] });
  if ((await p.exited) !== 0) throw new Error(`${argv[0]} failed`);
}

// The same jails made ahead of time (JailPool), started with their payload on demand.
const pool = new JailPool(jailSpec, { size: 4 });
async function pooled(): Promise<void> {
  const r = await pool.spawn({ argv: ["/bin/true"] }).exited;
  if (r.status !== 0) throw new Error(`pooled jail failed: ${JSON.stringify(r)}`);
}

const runners: Record<string, () => Promise<void>> = {
  "lightjail API": jail,
  "lightjail API, pooled jails": pooled,
  "bwrap (same process)": () => proc([...bwrap, "/bin/true"]),
  "unshare+chroot (same process)": () => proc([...unshare, "/bin/true"]),
  "Bun.spawn /bin/true": () => proc(["/bin/true"]),
};
const native = resolve(import.meta.dir, "..", "zig", "zig-out", "bin", "ljspawn");
const coldRunners: Record<string, () => Promise<void>> = {
  "ljspawn native CLI (cold)": () => proc([native, "-d", world, "-p", "true"]),
  "lj spawn Bun CLI (cold)": () => proc([process.execPath, cli, "spawn", "-d", world, "-p", "true"]),
  "bwrap CLI (cold)": () => proc([...bwrap, "/bin/sh", "-c", "true"]),
};

const samples: Record<string, number[]> = {};
async function measure(name: string, fn: () => Promise<void>, n: number): Promise<void> {
  samples[name] ??= [];
  const list = samples[name];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    list.push(performance.now() - t);
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

// Warm-up: the shim, the page cache, Bun's JIT.
for (const fn of Object.values(runners)) for (let i = 0; i < 5; i++) await fn();
for (const fn of Object.values(coldRunners)) await fn();

const rate = { sequential: [] as number[], parallel2: [] as number[], pooled_sequential: [] as number[] };
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, fn] of Object.entries(runners)) await measure(name, fn, PER_ROUND);
  for (const [name, fn] of Object.entries(coldRunners)) await measure(name, fn, COLD_PER_ROUND);
  let t = performance.now();
  for (let i = 0; i < PER_ROUND * 2; i++) await jail();
  rate.sequential.push((PER_ROUND * 2 * 1000) / (performance.now() - t));
  t = performance.now();
  const lane = async () => {
    for (let i = 0; i < PER_ROUND; i++) await jail();
  };
  await Promise.all([lane(), lane()]);
  rate.parallel2.push((PER_ROUND * 2 * 1000) / (performance.now() - t));
  t = performance.now();
  for (let i = 0; i < PER_ROUND * 2; i++) await pooled();
  rate.pooled_sequential.push((PER_ROUND * 2 * 1000) / (performance.now() - t));
}

// Where the time goes: the median of every step over traced jails.
const steps: Record<string, number[]> = {};
const tracedTotals: number[] = [];
for (let i = 0; i < PER_ROUND * 5; i++) {
  const r = await spawnJail({ ...jailSpec, trace: true }).exited;
  tracedTotals.push(r.durationMs);
  for (const s of r.trace ?? []) {
    steps[s.step] ??= [];
    steps[s.step]!.push(s.ms);
  }
}
const trace = Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, median(v)]));

const med = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));
const lj = med["lightjail API"]!;
const result = {
  medians_ms: med,
  jails_per_s: {
    sequential: median(rate.sequential),
    parallel2: median(rate.parallel2),
    pooled_sequential: median(rate.pooled_sequential),
  },
  ratios: {
    bwrap_over_lightjail: med["bwrap (same process)"]! / lj,
    bwrap_over_lightjail_pooled: med["bwrap (same process)"]! / med["lightjail API, pooled jails"]!,
    unshare_chroot_over_lightjail: med["unshare+chroot (same process)"]! / lj,
    lightjail_over_bun_spawn: lj / med["Bun.spawn /bin/true"]!,
    ljspawn_native_cli_over_bwrap_cli: med["ljspawn native CLI (cold)"]! / med["bwrap CLI (cold)"]!,
    lj_bun_cli_over_bwrap_cli: med["lj spawn Bun CLI (cold)"]! / med["bwrap CLI (cold)"]!,
  },
  targets: {
    bwrap_over_lightjail: ">= 2.5",
    sequential_jails_per_s: ">= 400",
    lj_cli_over_bwrap_cli: "<= 2",
  },
  trace_ms: trace,
  rounds: ROUNDS,
  per_round: PER_ROUND,
};

const pad = (s: string, n: number) => s.padEnd(n);
console.log(pad("runner", 34), "median ms");
for (const [k, v] of Object.entries(med)) console.log(pad(k, 34), v.toFixed(3));
console.log(pad("jails/s sequential", 34), result.jails_per_s.sequential.toFixed(0));
console.log(pad("jails/s 2-way parallel", 34), result.jails_per_s.parallel2.toFixed(0));
console.log(pad("jails/s sequential, pooled", 34), result.jails_per_s.pooled_sequential.toFixed(0));
for (const [k, v] of Object.entries(result.ratios)) console.log(pad(k, 34), v.toFixed(2));
console.log("\nwhere a warm jail's time goes (median ms per step, traced jails)");
for (const [k, v] of Object.entries(trace)) console.log(pad(`  ${k}`, 34), v.toFixed(3));
// Each step has its own tail (a wake-up that comes late, a grace period that waits): the
// medians of the steps add up to less than the median of the whole.
const stepSum = Object.values(trace).reduce((a, b) => a + b, 0);
console.log(pad("  sum of the step medians", 34), stepSum.toFixed(3));
console.log(pad("  median of the traced totals", 34), median(tracedTotals).toFixed(3));
await pool.close();
rmSync(root, { recursive: true, force: true });
console.log(JSON.stringify(result));
