/**
 * The PaaS core without root: deploys, releases, config, formation, runs and apps over a fake
 * spawner (test/helpers/fake-spawner.ts) and a tiny build. The real-jail scenarios are in
 * test/paas.test.ts.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type { DeployRow } from "../src/paas/db.ts";
import { Paas } from "../src/paas/paas.ts";
import { paths } from "../src/store/paths.ts";
import { type FakePaas, fakePaas, source, tinyBuild } from "./helpers/fake-paas.ts";
import { commandOf } from "./helpers/fake-spawner.ts";
import { makeTar } from "./helpers/tar.ts";

let f: FakePaas;
beforeEach(() => {
  f = fakePaas({ keepReleases: 3 });
});
afterEach(async () => {
  await f.close();
});

async function deploy(
  app: string,
  procfile: string[],
  files: Record<string, string> = {},
): Promise<DeployRow> {
  const run = await f.paas.deploys.start(app, await source(procfile, files), "test");
  return run.done;
}

const until = async (ok: () => boolean, ms = 3000) => {
  const end = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > end) throw new Error("condition not met in time");
    await Bun.sleep(5);
  }
};

describe("deploys", () => {
  test("a deploy builds, starts web and serves its address", async () => {
    f.paas.apps.create("a1");
    const d = await deploy("a1", ["web: serve"]);
    expect(d.status).toBe("succeeded");
    expect(d.release).toBe(1);
    expect(f.paas.formation.targets("a1")).toEqual([
      { address: f.spawner.live("a1")[0]!.address, port: 5000 },
    ]);
    const log = f.paas.deploys.info(d.id).log;
    expect(log[0]).toMatch(/^-----> Received 1 entries/);
    expect(log.at(-1)).toBe(`=====> deploy ${d.id} succeeded: release v1 is serving`);
    expect(readdirSync(paths.paasIncoming())).toEqual([]);
  });

  test("a rejected archive starts no deploy and leaves nothing", async () => {
    f.paas.apps.create("a2");
    const bad = new Blob([await makeTar([{ name: "../evil", body: "x" }])]).stream();
    await expect(f.paas.deploys.start("a2", bad, "test")).rejects.toMatchObject({ code: "archive-dot-dot" });
    expect(f.paas.deploys.list("a2")).toEqual([]);
    expect(readdirSync(paths.paasIncoming())).toEqual([]);
  });

  test("an unknown app is refused before its upload is read", async () => {
    await expect(f.paas.deploys.start("nope", await source(["web: x"]), "test")).rejects.toMatchObject({
      code: "app-not-found",
    });
  });

  test("a failed build keeps the release serving", async () => {
    f.paas.apps.create("a3");
    await deploy("a3", ["web: v1"]);
    const d = await deploy("a3", ["web: v2"], { FAIL_BUILD: "" });
    expect(d.status).toBe("failed");
    expect(f.paas.deploys.info(d.id).log).toContain("-----> Release v1 is still serving");
    expect(f.paas.db.app("a3").currentRelease).toBe(1);
  });

  test("a failed health check stops the new processes and removes its slug", async () => {
    f.paas.apps.create("a4");
    await deploy("a4", ["web: good"]);
    f.spawner.behave = (spec) => ({ listens: commandOf(spec) === "good" });
    const d = await deploy("a4", ["web: deaf"]);
    expect(d.status).toBe("failed");
    expect(d.error).toMatch(/health check/);
    expect(f.spawner.live("a4").map((j) => commandOf(j.spec))).toEqual(["good"]);
    expect(readdirSync(join(paths.slugs(), "a4")).filter((n) => n === d.slug)).toEqual([]);
  });

  test("deploys of one app wait for each other", async () => {
    // The first build waits until the second deploy has said that it waits.
    let open!: () => void;
    const gate = new Promise<void>((r) => {
      open = r;
    });
    let builds = 0;
    const g = fakePaas({
      build: async (dir, o) => {
        if (++builds === 1) await gate;
        return tinyBuild(dir, o);
      },
    });
    try {
      g.paas.apps.create("a5");
      const r1 = await g.paas.deploys.start("a5", await source(["web: one"]), "test");
      await until(() => builds === 1);
      const r2 = await g.paas.deploys.start("a5", await source(["web: two"]), "test");
      await until(() => r2.lines.includes("-----> Waiting for the deploy before this one to finish"));
      expect(builds).toBe(1);
      open();
      await Promise.all([r1.done, r2.done]);
      expect(r1.lines).not.toContain("-----> Waiting for the deploy before this one to finish");
      expect(g.paas.db.app("a5").currentRelease).toBe(2);
      expect(g.spawner.live("a5").map((j) => commandOf(j.spec))).toEqual(["two"]);
    } finally {
      open();
      await g.close();
    }
  });
});

describe("releases", () => {
  test("the release command runs before the processes; a failing one keeps the old release", async () => {
    f.paas.apps.create("r1");
    f.spawner.behave = (spec) =>
      commandOf(spec) === "migrate" ? { output: ["migrated"], exitCode: 0 } : { listens: true };
    const ok = await deploy("r1", ["web: serve", "release: migrate"]);
    expect(ok.status).toBe("succeeded");
    expect(f.spawner.jails.map((j) => j.spec.env?.LJ_PROCESS)).toEqual(["release.1", "web.1"]);
    expect(f.paas.deploys.info(ok.id).log).toContain("       migrated");
    f.spawner.behave = (spec) => (commandOf(spec) === "boom" ? { exitCode: 3 } : { listens: true });
    const bad = await deploy("r1", ["web: serve2", "release: boom"]);
    expect(bad.error).toBe("the release command of v2 exited with status 3");
    expect(f.spawner.jails.some((j) => commandOf(j.spec) === "serve2")).toBe(false);
    expect(f.paas.db.app("r1").currentRelease).toBe(1);
  });

  test("a rollback is a new release of the old slug", async () => {
    f.paas.apps.create("r2");
    await deploy("r2", ["web: one"]);
    await deploy("r2", ["web: two"]);
    const rel = await f.paas.releases.rollback("r2", 1);
    expect(rel.version).toBe(3);
    expect(rel.description).toBe("rollback to v1");
    expect(f.spawner.live("r2").map((j) => commandOf(j.spec))).toEqual(["one"]);
  });

  test("releases beyond the kept number go with their slugs", async () => {
    f.paas.apps.create("r3");
    const ds: DeployRow[] = [];
    for (let i = 0; i < 4; i++) ds.push(await deploy("r3", [`web: v${i}`]));
    expect(f.paas.releases.list("r3").map((r) => r.version)).toEqual([4, 3, 2]);
    expect(existsSync(join(paths.slugs(), "r3", ds[0]!.slug!))).toBe(false);
    expect(existsSync(join(paths.slugs(), "r3", ds[1]!.slug!))).toBe(true);
  });
});

describe("config", () => {
  test("before a release it is stored; after, it makes a release whose processes see it", async () => {
    f.paas.apps.create("c1");
    expect(await f.paas.config.set("c1", { A: "1" })).toEqual({ release: null });
    await deploy("c1", ["web: serve"]);
    expect(await f.paas.config.set("c1", { B: "2", A: null })).toEqual({ release: 2 });
    expect(f.paas.config.get("c1")).toEqual({ B: "2" });
    const env = f.spawner.live("c1")[0]!.spec.env!;
    expect([env.A, env.B, env.LJ_RELEASE]).toEqual([undefined, "2", "v2"]);
  });

  test("a bad key is refused before anything changes", async () => {
    f.paas.apps.create("c2");
    await expect(f.paas.config.set("c2", { "1X": "y" })).rejects.toMatchObject({ code: "bad-config-key" });
    expect(f.paas.config.get("c2")).toEqual({});
  });
});

describe("formation", () => {
  test("scaling starts and stops instances of the serving release", async () => {
    f.paas.apps.create("f1");
    await deploy("f1", ["web: serve", "worker: work"]);
    expect(f.paas.formation.ps("f1").map((p) => p.name)).toEqual(["web.1"]);
    await f.paas.formation.scale("f1", { worker: { count: 2 }, web: { count: 0 } });
    expect(f.paas.formation.ps("f1").map((p) => p.name)).toEqual(["worker.1", "worker.2"]);
    expect(f.paas.formation.targets("f1")).toEqual([]);
  });

  test("a limit change restarts the type's processes with it", async () => {
    f.paas.apps.create("f2");
    await deploy("f2", ["web: serve"]);
    const before = f.spawner.live("f2")[0]!;
    await f.paas.formation.scale("f2", { web: { memoryMb: 96 } });
    const after = f.spawner.live("f2")[0]!;
    expect(before.ended?.signal).toBe(15);
    expect(after.spec.limits?.memoryBytes).toBe(96 * 1024 * 1024);
  });

  test("an unknown process type or a bad value is refused", async () => {
    f.paas.apps.create("f3");
    await deploy("f3", ["web: serve"]);
    await expect(f.paas.formation.scale("f3", { clock: { count: 1 } })).rejects.toMatchObject({
      code: "no-process-type",
    });
    await expect(f.paas.formation.scale("f3", { web: { count: 1000 } })).rejects.toMatchObject({
      code: "bad-formation",
    });
    await expect(f.paas.formation.scale("f3", { release: { count: 1 } })).rejects.toMatchObject({
      code: "bad-process-type",
    });
  });

  test("a crashed process is restarted", async () => {
    f.paas.apps.create("f4");
    await deploy("f4", ["web: serve"]);
    f.spawner.live("f4")[0]!.exit(3);
    await until(
      () => f.paas.formation.ps("f4")[0]?.state === "up" && f.paas.formation.ps("f4")[0]!.restarts === 1,
    );
    expect(f.paas.formation.ps("f4")[0]!.lastExit).toBe("exited with status 3");
  });

  test("limits: the formation, then lj.toml [limits], then the server's defaults", async () => {
    f.paas.apps.create("f5");
    await deploy("f5", ["web: serve"], { LIMITS: JSON.stringify({ pids: 77, cpus: 0.5 }) });
    const rel = f.paas.releases.list("f5")[0]!;
    const limits = () => f.paas.specs.processSpec("f5", rel, "web", "web.1").limits;
    expect(limits()).toEqual({ memoryBytes: 512 * 1024 * 1024, pids: 77, cpus: 0.5 });
    await f.paas.formation.scale("f5", { web: { pids: 40 } });
    expect(limits()).toEqual({ memoryBytes: 512 * 1024 * 1024, pids: 40, cpus: 0.5 });
  });

  test("every change of the serving processes is announced", async () => {
    let changes = 0;
    f.paas.onChange(() => changes++);
    f.paas.apps.create("f6");
    const after = changes;
    await deploy("f6", ["web: serve"]);
    expect(changes).toBeGreaterThan(after);
  });
});

describe("runs", () => {
  test("a one-off runs the command in a jail of the current release", async () => {
    f.paas.apps.create("o1");
    expect(() => f.paas.runs.once("o1", "ls")).toThrow(/has no release yet/);
    await deploy("o1", ["web: serve"]);
    f.spawner.behave = () => ({ output: ["hi"], exitCode: 0 });
    const jail = f.paas.runs.once("o1", "echo hi");
    expect(await new Response(jail.stdout).text()).toBe("hi\n");
    expect((await jail.exited).status).toBe(0);
    const spec = f.spawner.jails.at(-1)!.spec;
    expect([commandOf(spec), spec.env?.LJ_PROCESS, spec.timeoutMs]).toEqual(["echo hi", "run.1", 3_600_000]);
  });
});

describe("apps", () => {
  test("names follow the rule; a second app of a name conflicts", () => {
    expect(() => f.paas.apps.create("Bad_Name")).toThrow();
    f.paas.apps.create("p1");
    expect(() => f.paas.apps.create("p1")).toThrow(/already exists/);
  });

  test("destroying an app stops its processes and removes its state", async () => {
    f.paas.apps.create("p2");
    await deploy("p2", ["web: serve"]);
    await f.paas.apps.destroy("p2");
    expect(f.spawner.live("p2")).toEqual([]);
    expect(f.paas.db.findApp("p2")).toBeNull();
    expect(existsSync(join(paths.slugs(), "p2"))).toBe(false);
    expect(f.paas.formation.targets("p2")).toBeNull();
  });

  test("a restarted server brings the current release back", async () => {
    f.paas.apps.create("p3");
    await deploy("p3", ["web: serve"]);
    await f.paas.close();
    const again = new Paas({ spawner: f.spawner, healthTimeoutMs: 300 });
    try {
      await again.prepare();
      await again.recover();
      expect(again.formation.ps("p3").map((p) => [p.name, p.release])).toEqual([["web.1", 1]]);
    } finally {
      await again.close();
    }
  });
});
