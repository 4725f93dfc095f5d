/**
 * The state root is masked in every jail wherever its tree would show it (zig/src/hide.zig):
 * below a host world's bind of /usr, below any bind mount's source, below a `-d` root; a jail
 * whose root is the state root itself is refused; and a pooled root built for one state root
 * is never handed to a jail of another.
 */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { createWorld } from "../src/build/worlds.ts";
import { holdSubnet, netConfig } from "../src/jail/net.ts";
import { runJail } from "../src/jail/spawn.ts";
import type { JailSpec } from "../src/jail/spec.ts";
import { worldMounts, worldPath } from "../src/store/worlds.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

const roots: string[] = [];
let base: Pick<JailSpec, "layers" | "mounts">;

beforeAll(async () => {
  if (!isRoot()) return;
  // Under /usr/local, as the default /usr/local/lj is: the host world binds /usr.
  for (const tag of ["a", "b"]) {
    const r = mkdtempSync(`/usr/local/lj-hide-${tag}-`);
    roots.push(r);
    process.env.LIGHTJAIL_ROOT = r;
    await createWorld("w", "host");
    mkdirSync(`${r}/paas`, { mode: 0o700 });
    writeFileSync(`${r}/paas/token`, `token-${tag}`, { mode: 0o600 });
  }
  process.env.LIGHTJAIL_ROOT = roots[0];
  base = { layers: [worldPath("w")], mounts: await worldMounts("w") };
});

afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

const readTokens = (extra: Partial<JailSpec> = {}) =>
  runJail({
    ...base,
    argv: ["/bin/sh", "-c", `for r in ${roots.join(" ")}; do cat $r/paas/token 2>/dev/null; echo; done`],
    // Root with DAC override: only the mask, not permissions, can keep it out.
    caps: ["DAC_OVERRIDE", "DAC_READ_SEARCH"],
    ...extra,
  });

rootTest("below a bind mount's source, at the matching place under its target", async () => {
  const [a] = roots as [string];
  const r = await runJail({
    ...base,
    mounts: [...(base.mounts ?? []), { src: "/usr/local", dst: "/mnt/local", readonly: true }],
    argv: [
      "/bin/sh",
      "-c",
      `ls -A /mnt/local/${basename(a)}; cat /mnt/local/${basename(a)}/paas/token; ls /mnt/local >/dev/null && echo SEEN`,
    ],
    caps: ["DAC_OVERRIDE", "DAC_READ_SEARCH"],
  });
  expect(r.stdout.trim()).toBe("SEEN");
  expect(r.stderr).toContain("No such file or directory");
});

rootTest("below a -d root; and the state root itself cannot be a jail's root", async () => {
  // A -d root holding a state root of its own (the host's /usr bound in for a shell).
  const top = mkdtempSync("/tmp/lj-hide-d-");
  const state = join(top, "state");
  mkdirSync(join(state, "paas"), { recursive: true });
  writeFileSync(join(state, "paas/token"), "token-d");
  for (const l of ["bin", "lib", "lib64", "sbin"]) symlinkSync(`usr/${l}`, join(top, l));
  const saved = process.env.LIGHTJAIL_ROOT;
  process.env.LIGHTJAIL_ROOT = state;
  try {
    const r = await runJail({
      root: top,
      mounts: [{ src: "/usr", dst: "/usr", readonly: true }],
      argv: ["/bin/sh", "-c", "ls -A /state; cat /state/paas/token || echo MASKED"],
      caps: ["DAC_OVERRIDE"],
    });
    expect(r.stdout.trim()).toBe("MASKED");
    const self = await runJail({ root: state, argv: ["/bin/true"] });
    expect(self.reason).toBe("setup");
    expect(self.error).toContain("holds lightjail's state and cannot be a jail's root");
  } finally {
    process.env.LIGHTJAIL_ROOT = saved;
    rmSync(top, { recursive: true, force: true });
  }
});

rootTest("jails of two state roots, one after another (pooled roots), each mask their own", async () => {
  // Jails one after another take pooled roots; a root made for one state root (its mask) must
  // never serve the other, and the mask must follow the state root the spawn names.
  const seen: string[] = [];
  for (let i = 0; i < 8; i++) {
    const mine = i < 4 ? 0 : 1;
    process.env.LIGHTJAIL_ROOT = roots[mine];
    const r = await readTokens();
    expect(r.status).toBe(0);
    seen.push(r.stdout.trim());
  }
  process.env.LIGHTJAIL_ROOT = roots[0];
  // Each jail masks its own root; the other root is not live (not in the machine's registry),
  // so it shows: never its own.
  expect(seen).toEqual([...Array(4).fill("token-b"), ...Array(4).fill("token-a")]);
});

rootTest("a live root of another lightjail on the machine is masked too", async () => {
  const [a, b] = roots as [string, string];
  // Root b is live: it holds its subnet in the machine's registry (as `lj serve` does).
  process.env.LIGHTJAIL_ROOT = b;
  process.env.LJ_SUBNET = "10.245.0.0/24";
  const release = holdSubnet(netConfig());
  try {
    process.env.LIGHTJAIL_ROOT = a;
    const r = await readTokens();
    expect(r.stdout.trim()).toBe("");
  } finally {
    release();
    process.env.LIGHTJAIL_ROOT = a;
    delete process.env.LJ_SUBNET;
  }
});
