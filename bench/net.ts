/**
 * Network benchmark: what a private address adds to a spawn, against net "none" (and "host")
 * measured in the same run, rounds interleaved so a noisy neighbour hurts all alike.
 *
 *   start   spawnJail -> /bin/true exited (the payload runs only after its veth, addresses,
 *           routes and filter elements are in place);
 *   full    spawnJail -> closed (teardown included: veth, rules and lease removed);
 *   native  the native `ljspawn -- /bin/true` as a whole process, with `-i auto` and without
 *           (cold: a new process each time), started from here one after another.
 *
 * Prints a table and, as its last line, one JSON object with the medians and the ratios
 * against net none. Needs root. Uses its own subnet so a real lightjail is not disturbed.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { stopPoolWiring } from "../src/jail/net.ts";
import { spawnJail } from "../src/jail/spawn.ts";
import type { JailSpec, NetMode } from "../src/jail/spec.ts";
import { makeMiniWorld } from "./mini-world.ts";

if (process.getuid?.() !== 0) {
  console.error("bench/net.ts needs root (namespaces, veths, nftables)");
  process.exit(77);
}

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const PER_ROUND = Number(process.env.PER_ROUND ?? 20);

const root = mkdtempSync(join(tmpdir(), "lj-bench-net-"));
process.env.LIGHTJAIL_ROOT = root;
process.env.LJ_SUBNET ??= "10.236.0.0/24";
const world = makeMiniWorld(join(root, "worlds", "mini"));

const spec = (net: NetMode): JailSpec => ({
  argv: ["/bin/true"],
  layers: [world],
  net,
  stdio: ["ignore", "ignore", "ignore"],
});

const samples: Record<string, number[]> = {};
async function once(net: NetMode): Promise<void> {
  const t = performance.now();
  const j = spawnJail(spec(net));
  const r = await j.exited;
  const started = performance.now() - t;
  await j.closed;
  const full = performance.now() - t;
  if (r.status !== 0) throw new Error(`jail failed: ${JSON.stringify(r)}`);
  for (const [k, v] of [[`${net} start`, started] as const, [`${net} full`, full] as const]) {
    samples[k] ??= [];
    samples[k].push(v);
  }
}

const modes: NetMode[] = ["none", "host", "private"];
for (const m of modes) for (let i = 0; i < 5; i++) await once(m); // warm-up (and the nft table)
for (const k of Object.keys(samples)) delete samples[k];

for (let round = 0; round < ROUNDS; round++) {
  for (const m of modes) for (let i = 0; i < PER_ROUND; i++) await once(m);
}

// The native ljspawn, as a whole process: with a private address and without. The addresses
// this process's namespace pool holds ahead go back first (with the kernel's teardown of their
// namespaces), so that they do not weigh on the native runs.
stopPoolWiring();
await Bun.sleep(300);
const ljspawn = resolve(import.meta.dir, "..", "zig", "zig-out", "bin", "ljspawn");
const native = (net: boolean) => {
  const argv = [ljspawn, "--world", "mini", ...(net ? ["-i", "auto"] : []), "--", "/bin/true"];
  const t = performance.now();
  const p = Bun.spawnSync(argv, { stdout: "ignore", stderr: "pipe", env: process.env });
  const ms = performance.now() - t;
  if (p.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${p.stderr}`);
  return ms;
};
for (let i = 0; i < 3; i++) {
  native(true);
  native(false);
}
for (let round = 0; round < ROUNDS; round++) {
  for (const net of [true, false]) {
    for (let i = 0; i < PER_ROUND; i++) {
      const k = net ? "ljspawn -i auto" : "ljspawn";
      samples[k] ??= [];
      samples[k].push(native(net));
    }
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};
const med = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));
const result = {
  medians_ms: med,
  ratios: {
    private_over_none_start: med["private start"]! / med["none start"]!,
    private_over_none_full: med["private full"]! / med["none full"]!,
    host_over_none_start: med["host start"]! / med["none start"]!,
    native_private_over_none: med["ljspawn -i auto"]! / med.ljspawn!,
  },
  added_ms: {
    start: med["private start"]! - med["none start"]!,
    full: med["private full"]! - med["none full"]!,
  },
  rounds: ROUNDS,
  per_round: PER_ROUND,
};

const pad = (s: string, n: number) => s.padEnd(n);
console.log(pad("runner", 28), "median ms");
for (const [k, v] of Object.entries(med)) console.log(pad(k, 28), v.toFixed(3));
for (const [k, v] of Object.entries(result.ratios)) console.log(pad(k, 28), v.toFixed(2));
rmSync(root, { recursive: true, force: true });
console.log(JSON.stringify(result));
