/**
 * A throwaway LIGHTJAIL_ROOT with a host world, shared by the jail tests of one file.
 * The host world is instant (it copies /etc without secrets and binds /usr read-only).
 */
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createWorld } from "../../src/build/worlds.ts";
import type { JailSpec } from "../../src/jail/spec.ts";
import { worldMounts, worldPath } from "../../src/store/worlds.ts";

export const projectDir = resolve(import.meta.dir, "..", "..");
export const cliPath = join(projectDir, "src", "cli", "lj.ts");

export interface JailEnv {
  root: string;
  world: string;
  base: Pick<JailSpec, "layers" | "mounts">;
  cleanup(): void;
}

export async function makeJailEnv(): Promise<JailEnv> {
  const root = mkdtempSync(join(tmpdir(), "lj-test-"));
  process.env.LIGHTJAIL_ROOT = root;
  await createWorld("test", "host");
  const world = worldPath("test");
  return {
    root,
    world,
    base: { layers: [world], mounts: await worldMounts("test") },
    cleanup() {
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/**
 * Builds a static test program from test/fixtures (the escape probe by default) into `dir`
 * with Zig's C compiler, so it runs in any world. LJ_TEST_PROBE_DIR holds them made ahead
 * (the cgroup v2 guest has no compiler: scripts/cgroup2-guest.sh builds them on the host).
 */
export async function buildProbe(dir: string, source = "escape/probe.c", name = "probe"): Promise<string> {
  const out = join(dir, name);
  const made = process.env.LJ_TEST_PROBE_DIR;
  if (made) {
    copyFileSync(join(made, source.replace(/\.c$/, "")), out);
    return out;
  }
  const zig = join(projectDir, ".tools", "bin", "zig");
  const cc = Bun.spawn(
    [
      zig,
      "cc",
      "-target",
      `${process.arch === "arm64" ? "aarch64" : "x86_64"}-linux-musl`,
      "-static",
      "-O2",
      "-o",
      out,
      join(projectDir, "test/fixtures", source),
    ],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
  if ((await cc.exited) !== 0) throw new Error(`building ${source} failed`);
  return out;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command without blocking the event loop (servers under test live in this process),
 * capturing exit code, stdout and stderr together. git never prompts.
 */
export async function runCommand(
  argv: string[],
  env: Record<string, string> = {},
  cwd?: string,
): Promise<RunResult> {
  const p = Bun.spawn(argv, {
    cwd,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, GIT_TERMINAL_PROMPT: "0", ...env },
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, stdout, stderr };
}

/**
 * Runs `lj` as a user would, outside any git checkout: in this repository's, `lj apps create`
 * would add its `lj` remote to the repository.
 */
export const lj = (args: string[], env: Record<string, string> = {}) =>
  runCommand([process.execPath, cliPath, ...args], env, tmpdir());
