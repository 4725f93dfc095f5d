/**
 * A PaaS over a fresh state root with a fake spawner (test/helpers/fake-spawner.ts) and a
 * tiny build that reads the Procfile: no root, no jails, no plugins.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Slug } from "../../src/build/types.ts";
import { LjError } from "../../src/errors.ts";
import { Paas, type PaasOptions } from "../../src/paas/paas.ts";
import { paths } from "../../src/store/paths.ts";
import { readProcfile } from "../fixtures/paas/fake-build.ts";
import { FakeSpawner } from "./fake-spawner.ts";
import { makeTar } from "./tar.ts";

let n = 0;

/** Copies the source into slugs/<app>/<id>/app; a FAIL_BUILD file fails it; lj.toml is not read. */
export async function tinyBuild(
  dir: string,
  opts: { app: string; log?: (l: string) => void },
): Promise<Slug> {
  opts.log?.("tiny build");
  if (existsSync(join(dir, "FAIL_BUILD"))) throw new LjError("invalid", "build-failed", "the build failed");
  const id = `s${++n}`;
  const path = join(paths.slugs(), opts.app, id);
  mkdirSync(path, { recursive: true });
  cpSync(dir, join(path, "app"), { recursive: true });
  const processes = readProcfile(dir);
  const limits = existsSync(join(dir, "LIMITS"))
    ? JSON.parse(readFileSync(join(dir, "LIMITS"), "utf8"))
    : undefined;
  return {
    id,
    path,
    world: "none",
    worldPath: join(paths.root(), "worlds", "none"),
    worldMounts: [],
    overlays: [],
    processes,
    env: {},
    cwd: "/app",
    createdAt: new Date().toISOString(),
    sizeBytes: 0,
    ...(limits ? { limits } : {}),
  };
}

export interface FakePaas {
  paas: Paas;
  spawner: FakeSpawner;
  root: string;
  close(): Promise<void>;
}

export function fakePaas(opts: PaasOptions = {}): FakePaas {
  const root = mkdtempSync(join(tmpdir(), "lj-fake-paas-"));
  process.env.LIGHTJAIL_ROOT = root;
  const spawner = new FakeSpawner();
  const paas = new Paas({ build: tinyBuild, spawner, healthTimeoutMs: 300, ...opts });
  return {
    paas,
    spawner,
    root,
    async close() {
      await paas.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** A source tarball: a Procfile with these lines, plus any other files. */
export async function source(
  procfile: string[],
  files: Record<string, string> = {},
): Promise<ReadableStream<Uint8Array>> {
  const entries = [{ name: "Procfile", body: `${procfile.join("\n")}\n` }];
  for (const [name, body] of Object.entries(files)) entries.push({ name, body });
  return new Blob([await makeTar(entries)]).stream();
}
