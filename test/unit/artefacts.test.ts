/**
 * Release artefacts (src/cluster/artefacts.ts) without a server: what a layer's blob holds
 * once a node extracts it under the rootfs archive rules, and that its digest is the blob's.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Slug } from "../../src/build/types.ts";
import { ReleaseArtefacts } from "../../src/cluster/artefacts.ts";
import type { ReleaseOf } from "../../src/paas/process-spec.ts";
import { extractTar } from "../../src/store/archive.ts";

let root: string;
let rel: ReleaseOf;
const isRoot = process.getuid?.() === 0;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "lj-artefacts-"));
  process.env.LIGHTJAIL_ROOT = root;
  const slug = join(root, "slug");
  mkdirSync(join(slug, "app", "bin"), { recursive: true });
  writeFileSync(join(slug, "app", "secret.txt"), "private\n", { mode: 0o600 });
  writeFileSync(join(slug, "app", "bin", "run"), "#!/bin/sh\necho hi\n", { mode: 0o755 });
  chmodSync(join(slug, "app", "bin", "run"), 0o755);
  symlinkSync("/usr/bin/python3", join(slug, "app", "python"));
  symlinkSync("bin/run", join(slug, "app", "run"));
  execFileSync("mkfifo", [join(slug, "app", "fifo")]);
  if (isRoot) execFileSync("chown", ["-R", "1234:1234", join(slug, "app")]);
  rel = {
    version: 3,
    config: { GREETING: "hi" },
    slug: {
      id: "s1",
      path: slug,
      world: "host",
      worldPath: join(root, "worlds", "host"),
      worldMounts: [],
      overlays: [],
      processes: { web: { command: "bin/run --port 5000" }, release: { command: "migrate" } },
      env: { FROM_SLUG: "1" },
      cwd: "/app",
      createdAt: "",
      sizeBytes: 0,
    } satisfies Slug,
  };
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
  delete process.env.LIGHTJAIL_ROOT;
});

describe("release artefacts", () => {
  test("the manifest: layers by digest, process argv without the release phase, the release's env", async () => {
    const a = new ReleaseArtefacts(() => rel);
    const m = await a.manifest("site", 3);
    expect(m.world).toBe("host");
    expect(m.layers).toHaveLength(1);
    expect(m.layers[0]!.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(m.processes).toEqual({
      web: { command: "bin/run --port 5000", argv: ["bin/run", "--port", "5000"] },
    });
    expect(m.env).toMatchObject({
      FROM_SLUG: "1",
      GREETING: "hi",
      PORT: "5000",
      LJ_APP: "site",
      LJ_RELEASE: "v3",
    });
    const blob = a.blob(m.layers[0]!.digest);
    const bytes = readFileSync(blob.file);
    expect(bytes.length).toBe(m.layers[0]!.size);
    expect(`sha256:${new Bun.CryptoHasher("sha256").update(bytes).digest("hex")}`).toBe(m.layers[0]!.digest);
    expect(() => a.blob(`sha256:${"1".repeat(64)}`)).toThrow(/no artefact/);
    expect(() => a.blob("../../etc/passwd")).toThrow(/no artefact/);
    // Packed again by a fresh server: the same digest (nodes keep their caches).
    const again = await new ReleaseArtefacts(() => rel).manifest("site", 3);
    expect(again.layers[0]!.digest).toBe(m.layers[0]!.digest);
  });

  test("a layer's blob, extracted as a node does: modes and symlinks kept, owned by root, no FIFO", async () => {
    const a = new ReleaseArtefacts(() => rel);
    const m = await a.manifest("site", 3);
    const out = join(root, "extracted");
    await extractTar(a.blob(m.layers[0]!.digest).file, out, { policy: "rootfs", compression: "gzip" });
    const secret = lstatSync(join(out, "app", "secret.txt"));
    expect(secret.mode & 0o777).toBe(0o600);
    expect(lstatSync(join(out, "app", "bin", "run")).mode & 0o777).toBe(0o755);
    if (isRoot) expect([secret.uid, secret.gid]).toEqual([0, 0]);
    expect(readlinkSync(join(out, "app", "python"))).toBe("/usr/bin/python3");
    expect(readlinkSync(join(out, "app", "run"))).toBe("bin/run");
    expect(() => lstatSync(join(out, "app", "fifo"))).toThrow();
    expect(readFileSync(join(out, "app", "bin", "run"), "utf8")).toBe("#!/bin/sh\necho hi\n");
  });
});
