/**
 * Build benchmark: a cold overlay build vs a cached rebuild (identical inputs), both through
 * the CLI as a user runs them, and an app's cold build vs a rebuild with an unchanged
 * lockfile. Prints times and ratios. Needs root. Target: cached rebuild < 1/20 of cold.
 *
 *   bun bench/build.ts            # ruby over the cached Debian world when present, else a host-world overlay
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const project = resolve(import.meta.dir, "..");
const cli = join(project, "src/cli/lj.ts");
const root = mkdtempSync(join(tmpdir(), "lj-bench-build-"));
process.env.LIGHTJAIL_ROOT = root;

async function lj(args: string[]): Promise<number> {
  const t0 = performance.now();
  const p = Bun.spawn([process.execPath, cli, ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, LIGHTJAIL_ROOT: root },
  });
  const err = await new Response(p.stderr).text();
  if ((await p.exited) !== 0) throw new Error(`lj ${args.join(" ")} failed:\n${err}`);
  return performance.now() - t0;
}

const fmt = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

try {
  await lj(["world", "create", "host", "--from", "host"]);
  const debian = join(
    process.env.LJ_TEST_WORLD_CACHE ?? "/var/cache/lightjail-test-worlds",
    "worlds",
    "bookworm",
  );
  let target: string[];
  let label: string;
  if (existsSync(join(debian, ".lj-world.json"))) {
    mkdirSync(join(root, "worlds"), { recursive: true });
    const { symlinkSync } = await import("node:fs");
    symlinkSync(debian, join(root, "worlds", "bookworm"));
    target = ["build", "--type", "language", "ruby", "--world", "bookworm", "--quiet"];
    label = "language/ruby over bookworm (apt-get install ruby bundler)";
  } else {
    const dir = join(root, "recipe");
    mkdirSync(dir);
    writeFileSync(
      join(dir, "Jailfile"),
      "name work\nversion 1.0.0\ntype tool\n#!/bin/sh\nset -e\nmkdir -p /opt/work\nfor i in $(seq 1 2000); do echo $i > /opt/work/$i; done\ncp -a /usr/share/perl5 /opt/work/ 2>/dev/null || true\n",
    );
    target = ["build", join(dir, "Jailfile"), "--world", "host", "--quiet"];
    label = "a Jailfile over the host world (no Debian world cached)";
  }
  const cold = await lj(target);
  const runs: number[] = [];
  for (let i = 0; i < 5; i++) runs.push(await lj(target));
  const cached = median(runs);
  const buildApp = [
    "build-app",
    join(project, "test/fixtures/apps/node-ms"),
    "--app",
    "bench",
    "--world",
    "host",
  ];
  const coldApp = await lj(buildApp);
  const warm: number[] = [];
  for (let i = 0; i < 3; i++) warm.push(await lj(buildApp));
  const warmApp = median(warm);
  console.log(`overlay: ${label}`);
  console.log(`  cold build            ${fmt(cold)}`);
  console.log(
    `  cached rebuild        ${fmt(cached)}   ratio cached/cold = 1/${(cold / cached).toFixed(1)}  (target < 1/20: ${cold / cached > 20 ? "met" : "NOT met"})`,
  );
  console.log("app: test/fixtures/apps/node-ms (npm, 1 registry dependency) over the host world");
  console.log(`  cold app build        ${fmt(coldApp)}`);
  console.log(`  rebuild, same lock    ${fmt(warmApp)}   ratio = 1/${(coldApp / warmApp).toFixed(1)}`);
} finally {
  rmSync(root, { recursive: true, force: true });
}
