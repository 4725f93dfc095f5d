/**
 * Two builds of the shim side by side: which one makes jails faster, end to end?
 *
 *   bun bench/spawn-ab.ts REV_OR_SO_A REV_OR_SO_B [ROUNDS]
 *
 * Each side is a git revision (checked out into a temporary worktree, its shim built, and
 * measured with its own TypeScript) or a path to a built liblightjail.so (measured with this
 * checkout's TypeScript). The rounds alternate A and B, each in a fresh Bun process (LJ_SHIM
 * picks the library) that measures full jails and `bwrap` from the same process, so a noisy
 * hour hurts both alike; the verdict is the mean bwrap/lightjail ratio and jails per second of
 * each side.
 * Per-step traces can mislead (a wait moved elsewhere still counts): this is the arbiter.
 * Needs root.
 */
import { existsSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

if (process.getuid?.() !== 0) {
  console.error("bench/spawn-ab.ts needs root (namespaces, mounts, cgroups)");
  process.exit(77);
}
const [a, b, roundsArg] = process.argv.slice(2);
if (!a || !b) {
  console.error("usage: bun bench/spawn-ab.ts REV_OR_SO_A REV_OR_SO_B [ROUNDS]");
  process.exit(64);
}
const ROUNDS = Number(roundsArg ?? 5);
const project = resolve(import.meta.dir, "..");
const temp = mkdtempSync(join(tmpdir(), "lj-ab-"));

function run(argv: string[], cwd = project): void {
  const r = Bun.spawnSync(argv, { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.toString().trim()}`);
}

interface Side {
  /** The built shim. */
  lib: string;
  /** The side's measuring script: this checkout's, or the revision's own. */
  script: string;
}

/** A side: the library as given, or the revision checked out and built in a worktree. */
function prepareSide(side: string, name: string): Side {
  const here = join(import.meta.dir, "spawn-ab-side.ts");
  if (side.endsWith(".so") && existsSync(side)) return { lib: resolve(side), script: here };
  const tree = join(temp, name);
  run(["git", "worktree", "add", "--detach", tree, side]);
  symlinkSync(join(project, "node_modules"), join(tree, "node_modules"));
  run([join(project, ".tools", "bin", "zig"), "build", "-Doptimize=ReleaseSafe"], join(tree, "zig"));
  const own = join(tree, "bench", "spawn-ab-side.ts");
  return {
    lib: join(tree, "zig", "zig-out", "lib", "liblightjail.so"),
    script: existsSync(own) ? own : here,
  };
}

interface Sample {
  lightjail: number;
  bwrap: number;
  ratio: number;
  perSecond: number;
}

try {
  const sides = { A: prepareSide(a, "a"), B: prepareSide(b, "b") };
  const samples: Record<"A" | "B", Sample[]> = { A: [], B: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const side of ["A", "B"] as const) {
      const p = Bun.spawnSync([process.execPath, sides[side].script], {
        env: { ...process.env, LJ_SHIM: sides[side].lib },
        stdout: "pipe",
        stderr: "inherit",
      });
      if (p.exitCode !== 0) throw new Error(`side ${side} failed`);
      const s = JSON.parse(p.stdout.toString()) as Sample;
      samples[side].push(s);
      console.log(
        `round ${round + 1} ${side}: lightjail ${s.lightjail.toFixed(3)} ms, bwrap ${s.bwrap.toFixed(3)} ms, ratio ${s.ratio.toFixed(2)}, ${s.perSecond.toFixed(0)} jails/s`,
      );
    }
  }
  const mean = (xs: number[]) => xs.reduce((x, y) => x + y, 0) / xs.length;
  const verdict = Object.fromEntries(
    (["A", "B"] as const).map((side) => [
      side,
      {
        ratio: mean(samples[side].map((s) => s.ratio)),
        perSecond: mean(samples[side].map((s) => s.perSecond)),
      },
    ]),
  );
  console.log(
    `A (${a}): bwrap/lightjail ${verdict.A!.ratio.toFixed(2)}x, ${verdict.A!.perSecond.toFixed(0)} jails/s`,
  );
  console.log(
    `B (${b}): bwrap/lightjail ${verdict.B!.ratio.toFixed(2)}x, ${verdict.B!.perSecond.toFixed(0)} jails/s`,
  );
  console.log(JSON.stringify({ a, b, rounds: ROUNDS, verdict }));
} finally {
  for (const name of ["a", "b"]) {
    if (existsSync(join(temp, name))) {
      Bun.spawnSync(["git", "worktree", "remove", "--force", join(temp, name)], { cwd: project });
    }
  }
  rmSync(temp, { recursive: true, force: true });
}
