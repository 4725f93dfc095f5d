/**
 * The TypeScript side's FreeBSD code paths, run on Linux: the per-platform numbers (errno and
 * signals, the destroy request that replaces SIGKILL), owner identity through the shim, the
 * status lines that decide whether a stage may be removed, the removal that never descends
 * into a mount, and world names. The shim's side is tested in zig/src/freebsd_steps.zig.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LjError } from "../src/errors.ts";
import { reapPending } from "../src/jail/ffi.ts";
import { processStartTime, procStat } from "../src/jail/owner.ts";
import { platformNumbers } from "../src/jail/platform.ts";
import { removeScratch } from "../src/jail/scratch.ts";
import { ownerSignal, parseStatus, signalNumber, stageTornDown } from "../src/jail/spawn.ts";
import { defaultWorld, freebsdDownloadRelease, parseWorldSource } from "../src/store/worlds.ts";
import { rootTest } from "./helpers/root.ts";

describe("per-platform numbers", () => {
  test("signals forwarded to a FreeBSD payload use FreeBSD's numbers", () => {
    // Linux's USR1 10, USR2 12 and CONT 18 are SIGBUS, SIGSYS and SIGTSTP on FreeBSD.
    expect(signalNumber("SIGUSR1", "freebsd")).toBe(30);
    expect(signalNumber("SIGUSR2", "freebsd")).toBe(31);
    expect(signalNumber("SIGCONT", "freebsd")).toBe(19);
    expect(signalNumber("SIGTERM", "freebsd")).toBe(15);
    expect(signalNumber("SIGUSR1", "linux")).toBe(10);
    expect(signalNumber("SIGCONT", "linux")).toBe(18);
    expect(() => signalNumber("SIGSEGV", "freebsd")).toThrow(LjError);
  });

  test("kill(SIGKILL) on FreeBSD sends the supervisor's destroy request, never SIGKILL", () => {
    expect(ownerSignal("SIGKILL", "freebsd")).toBe(29); // SIGINFO, handled by the supervisor
    expect(ownerSignal(9, "freebsd")).toBe(29);
    expect(ownerSignal("SIGTERM", "freebsd")).toBe(15);
    expect(ownerSignal("SIGKILL", "linux")).toBe(9);
    expect(ownerSignal("SIGUSR2", "linux")).toBe(12);
    expect(platformNumbers("freebsd").destroy).not.toBe(platformNumbers("freebsd").signals.SIGKILL);
  });

  test("lj_reap's 'not yet' is EAGAIN of the platform (FreeBSD 35, Linux 11)", () => {
    expect(reapPending(35, "freebsd")).toBe(true);
    expect(reapPending(11, "freebsd")).toBe(false); // EDEADLK on FreeBSD: a real error
    expect(reapPending(11, "linux")).toBe(true);
    expect(reapPending(35, "linux")).toBe(false);
  });
});

describe("owner identity on FreeBSD", () => {
  test("comes from the shim (kern.proc.pid), not /proc/PID/stat", () => {
    const asked: number[] = [];
    const shim = (pid: number) => {
      asked.push(pid);
      return 123456789n;
    };
    // A pid with no /proc entry here: reading /proc would give null.
    const gone = 4_194_000;
    expect(existsSync(`/proc/${gone}`)).toBe(false);
    expect(processStartTime(gone, "freebsd", shim)).toBe("123456789");
    expect(asked).toEqual([gone]);
    // The jail id built from it is what gc's owner check parses.
    expect(/^\d+\.\d+\.\d+$/.test(`${gone}.${processStartTime(gone, "freebsd", shim)}.1`)).toBe(true);
    // No such process, or no shim: not alive.
    expect(processStartTime(gone, "freebsd", () => null)).toBeNull();
    expect(
      processStartTime(gone, "freebsd", () => {
        throw new Error("shim missing");
      }),
    ).toBeNull();
    // Linux still reads /proc.
    expect(processStartTime(process.pid, "linux", shim)).toBe(procStat(process.pid)!.startTime);
    expect(asked).toEqual([gone, gone]);
  });
});

describe("status lines and the stage", () => {
  test("a teardown error after a setup error is recognised, and keeps the stage", () => {
    const r = parseStatus("E 19 mount devfs on /s/root/dev: ENODEV\nE 16 teardown: unmount /s/root: EBUSY\n");
    expect(r.error?.text).toBe("mount devfs on /s/root/dev: ENODEV");
    expect(r.teardownError).toBe("teardown: unmount /s/root: EBUSY");
    expect(stageTornDown(r)).toBe(false);
  });

  test("the stage is removed only after a report without a teardown error", () => {
    expect(stageTornDown(parseStatus("X 0\n"))).toBe(true);
    expect(stageTornDown(parseStatus("S 9\n"))).toBe(true);
    expect(stageTornDown(parseStatus("E 2 exec nope: ENOENT\n"))).toBe(true);
    expect(stageTornDown(parseStatus("X 0\nE 16 teardown: unmount /s/root/data: EBUSY\n"))).toBe(false);
    // No report at all: the supervisor was killed before its teardown.
    expect(stageTornDown(parseStatus(""))).toBe(false);
    expect(stageTornDown(undefined)).toBe(false);
  });
});

describe("scratch removal never descends into a mount", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), "lj-scratch-"));
  });
  afterEach(async () => {
    Bun.spawnSync(["umount", "-l", join(dir, "stage", "root", "data")]);
    await fsp.rm(dir, { recursive: true, force: true });
  });

  test("a plain stage is removed", async () => {
    const stage = join(dir, "stage");
    mkdirSync(join(stage, "root", "tmp"), { recursive: true });
    writeFileSync(join(stage, "root", "tmp", "f"), "x");
    expect(await removeScratch(stage)).toEqual({ removed: true });
    expect(existsSync(stage)).toBe(false);
    expect(await removeScratch(stage)).toEqual({ removed: true }); // gone already
  });

  rootTest("a stage with a bind mount left under it is never emptied", async () => {
    const host = join(dir, "host-data");
    const stage = join(dir, "stage");
    const mnt = join(stage, "root", "data");
    mkdirSync(host);
    writeFileSync(join(host, "precious"), "host data");
    mkdirSync(mnt, { recursive: true });
    writeFileSync(join(stage, "keep"), "stage file");
    // Same filesystem as the stage: the bind keeps st_dev, only the mount table shows it.
    const bind = Bun.spawnSync(["mount", "--bind", host, mnt]);
    expect(bind.exitCode).toBe(0);

    const r = await removeScratch(stage);
    expect(r.removed).toBe(false);
    if (!r.removed) expect(r.mounted).toBe(mnt);
    expect(readFileSync(join(host, "precious"), "utf8")).toBe("host data");
    expect(readFileSync(join(mnt, "precious"), "utf8")).toBe("host data");
    expect(readFileSync(join(stage, "keep"), "utf8")).toBe("stage file");

    // A mount on the stage itself is refused too.
    expect((await removeScratch(mnt)).removed).toBe(false);

    expect(Bun.spawnSync(["umount", mnt]).exitCode).toBe(0);
    expect(await removeScratch(stage)).toEqual({ removed: true });
    expect(existsSync(stage)).toBe(false);
    expect(readFileSync(join(host, "precious"), "utf8")).toBe("host data");
  });
});

describe("FreeBSD world names", () => {
  const savedRoot = process.env.LIGHTJAIL_ROOT;
  let root: string;
  beforeEach(async () => {
    root = await fsp.mkdtemp(join(tmpdir(), "lj-fbsd-worlds-"));
    process.env.LIGHTJAIL_ROOT = root;
  });
  afterEach(async () => {
    if (savedRoot === undefined) delete process.env.LIGHTJAIL_ROOT;
    else process.env.LIGHTJAIL_ROOT = savedRoot;
    await fsp.rm(root, { recursive: true, force: true });
  });

  test("--from freebsd: takes uname -r and strips the patch level for the download", () => {
    expect(parseWorldSource("freebsd:14.1-RELEASE-p6")).toEqual({ kind: "freebsd", release: "14.1-RELEASE" });
    expect(parseWorldSource("freebsd:15.0-RELEASE")).toEqual({ kind: "freebsd", release: "15.0-RELEASE" });
    expect(freebsdDownloadRelease("14.2-RELEASE-p12")).toBe("14.2-RELEASE");
    expect(freebsdDownloadRelease("14.1-RELEASE-p")).toBeNull();
    expect(() => parseWorldSource("freebsd:14.1-RELEASE-p6-x")).toThrow(LjError);
  });

  test("the default world keeps the uname -r name, and its hint is a command that parses", async () => {
    let err: unknown;
    try {
      await defaultWorld({ platform: "freebsd", release: "14.1-RELEASE-p6" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LjError);
    const hint = (err as LjError).hint ?? "";
    expect(hint).toContain("lj world create 14.1-RELEASE-p6 --from freebsd:14.1-RELEASE-p6");
    const from = /--from (\S+?)`/.exec(hint)?.[1];
    expect(parseWorldSource(from!)).toEqual({ kind: "freebsd", release: "14.1-RELEASE" });
    mkdirSync(join(root, "worlds", "14.1-RELEASE-p6"), { recursive: true });
    expect(await defaultWorld({ platform: "freebsd", release: "14.1-RELEASE-p6" })).toBe("14.1-RELEASE-p6");
  });
});
