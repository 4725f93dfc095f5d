/**
 * The supervisor without root: ProcessSet and Instance over a fake spawner. Health checks,
 * restarts after a crash, scaling, stopping (SIGTERM, then SIGKILL after the grace period) and
 * which instances the router may use.
 */
import { describe, expect, test } from "bun:test";
import type { JailSpec } from "../src/jail/spec.ts";
import { pumpLines } from "../src/lines.ts";
import { Instance, ProcessSet, type SupervisorHooks } from "../src/paas/supervisor.ts";
import { commandOf, FakeSpawner } from "./helpers/fake-spawner.ts";

const spec = (type: string, index: number): JailSpec => ({
  argv: ["/bin/sh", "-c", type],
  env: { LJ_APP: "app", LJ_PROCESS: `${type}.${index}` },
  layers: [],
});

function hooks(): SupervisorHooks & { lines: string[]; changes: number } {
  const h = {
    lines: [] as string[],
    changes: 0,
    log: (source: string, line: string) => h.lines.push(`${source}: ${line}`),
    changed: () => {
      h.changes++;
    },
  };
  return h;
}

const until = async (ok: () => boolean, ms = 3000) => {
  const end = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > end) throw new Error("condition not met in time");
    await Bun.sleep(5);
  }
};

describe("process sets", () => {
  test("scale starts and stops instances by type; only healthy web instances are targets", async () => {
    const spawner = new FakeSpawner();
    const set = new ProcessSet("app", 1, spec, hooks(), 500, spawner);
    await set.scale({ web: 2, worker: 1 });
    await set.healthy();
    expect(set.info().map((i) => [i.name, i.state])).toEqual([
      ["web.1", "up"],
      ["web.2", "up"],
      ["worker.1", "up"],
    ]);
    expect(set.webTargets().map((i) => i.name)).toEqual(["web.1", "web.2"]);
    await set.scale({ web: 1 });
    expect(set.info().map((i) => i.name)).toEqual(["web.1"]);
    expect(spawner.jails.filter((j) => j.ended).map((j) => commandOf(j.spec))).toEqual(["web", "worker"]);
    await set.stop();
    expect(spawner.jails.every((j) => j.ended)).toBe(true);
  });

  test("a web process that never listens fails its health check and is killed", async () => {
    const spawner = new FakeSpawner(() => ({ listens: false }));
    const h = hooks();
    const set = new ProcessSet("app", 3, spec, h, 50, spawner);
    await set.scale({ web: 1 });
    await expect(set.healthy()).rejects.toMatchObject({ code: "health-check-failed" });
    expect(spawner.jails[0]!.signals).toEqual(["SIGKILL"]);
    await until(() => set.info()[0]!.lastExit !== null);
    expect(set.info()[0]!.lastExit).toBe("killed: it failed its health check");
    expect(h.lines.some((l) => l.startsWith("lj: web.1 (v3) failed its health check"))).toBe(true);
    await set.stop();
  });

  test("output becomes log lines of the instance", async () => {
    const spawner = new FakeSpawner(() => ({ listens: true, output: ["one", "two"] }));
    const h = hooks();
    const set = new ProcessSet("app", 1, spec, h, 500, spawner);
    await set.scale({ web: 1 });
    await until(() => h.lines.includes("web.1: two"));
    expect(h.lines.filter((l) => l.startsWith("web.1:"))).toEqual(["web.1: one", "web.1: two"]);
    await set.stop();
  });
});

describe("instances", () => {
  test("a crash is restarted after a backoff and counted", async () => {
    const spawner = new FakeSpawner(() => ({ listens: true }));
    const h = hooks();
    const inst = new Instance("web", 1, 2, () => spec("web", 1), h, 500, 5000, spawner);
    inst.start();
    await inst.waitHealthy();
    spawner.jails[0]!.exit(4);
    await until(() => inst.state === "crashed");
    expect(inst.lastExit).toBe("exited with status 4");
    await until(() => inst.state === "up", 2000);
    expect([inst.restarts, spawner.jails.length]).toEqual([1, 2]);
    expect(h.lines).toContain("lj: web.1 (v2) exited with status 4");
    await inst.stop();
  });

  test("a spec that cannot be made is a crash, not a throw", async () => {
    const h = hooks();
    const inst = new Instance(
      "worker",
      1,
      1,
      () => {
        throw new Error("no such release");
      },
      h,
      500,
      null,
      new FakeSpawner(),
    );
    inst.start();
    expect([inst.state, inst.lastExit]).toEqual(["crashed", "could not start: no such release"]);
    await expect(inst.waitHealthy()).rejects.toMatchObject({ code: "not-started" });
    await inst.stop();
  });

  test("stop asks with SIGTERM, then kills after the grace period", async () => {
    const spawner = new FakeSpawner(() => ({ listens: true }));
    const inst = new Instance("worker", 1, 1, () => spec("worker", 1), hooks(), 500, null, spawner);
    inst.start();
    const jail = spawner.jails[0]!;
    // This one ignores SIGTERM.
    const kill = jail.kill.bind(jail);
    jail.kill = (s = "SIGKILL") => {
      jail.signals.push(s);
      if (s === "SIGKILL") kill("SIGKILL");
    };
    const t0 = performance.now();
    await inst.stop(30);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(25);
    expect(jail.signals.slice(0, 2)).toEqual(["SIGTERM", "SIGKILL"]);
    expect(inst.state).toBe("stopped");
    // Stopped means stopped: no restart follows.
    await Bun.sleep(300);
    expect(spawner.jails.length).toBe(1);
  });
});

describe("output lines", () => {
  /** The chunks one read at a time; then an end, or an error (a jail that went away). */
  const stream = (chunks: string[], fail = false) => {
    const left = [...chunks];
    return new ReadableStream<Uint8Array>({
      pull(c) {
        const next = left.shift();
        if (next !== undefined) c.enqueue(new TextEncoder().encode(next));
        else if (fail) c.error(new Error("gone"));
        else c.close();
      },
    });
  };

  test("lines across chunks, without CR; the last partial line at the end", async () => {
    const got: string[] = [];
    await pumpLines(stream(["a\r\nb", "c\n", "", "tail"]), (l) => got.push(l));
    expect(got).toEqual(["a", "bc", "tail"]);
  });

  test("a line without an end is cut at the cap; a failing stream ends like a closed one", async () => {
    const got: string[] = [];
    await pumpLines(stream(["x".repeat(10), "yz"], true), (l) => got.push(l), 8);
    expect(got).toEqual(["x".repeat(10), "yz"]);
  });

  test("what the reader throws is the caller's", async () => {
    const boom = pumpLines(stream(["a\n"]), () => {
      throw new Error("bad frame");
    });
    await expect(boom).rejects.toThrow("bad frame");
  });
});
