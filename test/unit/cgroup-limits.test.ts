import { describe, expect, test } from "bun:test";
import { limitFiles } from "../../src/jail/cgroup.ts";
import { CgroupKind } from "../../src/jail/spec.ts";

describe("the limit files a jail's cgroups get (zig/src/cgroup-limits.txt, read by the shim too)", () => {
  const limits = { memoryBytes: 64 * 1024 * 1024, pids: 8, cpus: 0.5 };

  test("v2: one cgroup with every limit; what may be missing is optional", () => {
    expect(limitFiles(CgroupKind.unified, limits)).toEqual([
      { file: "memory.max", value: "67108864" },
      { file: "memory.swap.max", value: "0", optional: true },
      { file: "memory.oom.group", value: "1", optional: true },
      { file: "pids.max", value: "8" },
      { file: "cpu.max", value: "50000 100000" },
    ]);
  });

  test("v1: each controller its own files; a limit not asked for writes nothing", () => {
    expect(limitFiles(CgroupKind.cpu, limits)).toEqual([
      { file: "cpu.cfs_period_us", value: "100000" },
      { file: "cpu.cfs_quota_us", value: "50000" },
    ]);
    expect(limitFiles(CgroupKind.memory, { pids: 8 })).toEqual([]);
    expect(limitFiles(CgroupKind.unified, { pids: 8 })).toEqual([{ file: "pids.max", value: "8" }]);
  });
});
