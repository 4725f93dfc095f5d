/**
 * One side of bench/spawn-ab.ts: with the shim LJ_SHIM names, full jails against `bwrap` from
 * this process, interleaved; prints one JSON object.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnJail } from "../src/jail/spawn.ts";
import { benchJailSpec, bwrapPeer, makeMiniWorld } from "./mini-world.ts";

const root = mkdtempSync(join(tmpdir(), "lj-ab-side-"));
process.env.LIGHTJAIL_ROOT = root;
const world = makeMiniWorld(join(root, "worlds", "mini"));
const spec = benchJailSpec(world);
const bwrap = [...bwrapPeer(world), "/bin/true"];
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[xs.length >> 1]!;

const jail: number[] = [];
const peer: number[] = [];
for (let i = 0; i < 10; i++) await spawnJail(spec).exited;
for (let round = 0; round < 4; round++) {
  for (let i = 0; i < 40; i++) {
    const t = performance.now();
    await spawnJail(spec).exited;
    jail.push(performance.now() - t);
  }
  for (let i = 0; i < 20; i++) {
    const t = performance.now();
    await Bun.spawn(bwrap, { stdio: ["ignore", "ignore", "inherit"] }).exited;
    peer.push(performance.now() - t);
  }
}
const t0 = performance.now();
for (let i = 0; i < 100; i++) await spawnJail(spec).exited;
const perSecond = 100_000 / (performance.now() - t0);
rmSync(root, { recursive: true, force: true });
console.log(
  JSON.stringify({
    lightjail: median(jail),
    bwrap: median(peer),
    ratio: median(peer) / median(jail),
    perSecond,
  }),
);
