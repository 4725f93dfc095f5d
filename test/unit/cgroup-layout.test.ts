import { describe, expect, test } from "bun:test";
import { detectLayout } from "../../src/jail/cgroup.ts";

const hybrid = [
  "25 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755",
  "26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,favordynmods",
  "30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory",
  "31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids",
  "32 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct",
].join("\n");

describe("where jails' cgroups live (the shim's reading of mountinfo)", () => {
  test("a hybrid host uses its v1 controllers, and its cgroup2 mount carries favordynmods", () => {
    expect(detectLayout(hybrid)).toEqual({
      version: 1,
      memory: "/sys/fs/cgroup/memory/lightjail",
      pids: "/sys/fs/cgroup/pids/lightjail",
      cpu: "/sys/fs/cgroup/cpu,cpuacct/lightjail",
      cgroup2: { point: "/sys/fs/cgroup/unified", favordynmods: true },
    });
  });

  test("a v2 host has one base; a host without cgroups has none", () => {
    expect(detectLayout("29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n")).toEqual({
      version: 2,
      unified: "/sys/fs/cgroup/lightjail",
      cgroup2: { point: "/sys/fs/cgroup", favordynmods: false },
    });
    expect(detectLayout("22 1 0:5 / /proc rw - proc proc rw\n")).toBeNull();
  });
});
