import { describe, expect, test } from "bun:test";
import { parseSpawnArgs, SPAWN_FLAGS, SPAWN_USAGE, specFromArgs } from "../../src/cli/spawn-args.ts";
import { LjError } from "../../src/errors.ts";

function usage(args: string[]): string {
  try {
    parseSpawnArgs(args);
  } catch (e) {
    expect(e).toBeInstanceOf(LjError);
    expect((e as LjError).exitCode).toBe(64);
    return (e as LjError).message;
  }
  throw new Error("arguments were accepted");
}

describe("lj spawn arguments", () => {
  test("the seed's ljspawn flags keep their meanings", () => {
    const a = parseSpawnArgs(["-d", "/w", "-p", "echo hi", "-n", "box", "-0", "-m", "64"]);
    const spec = specFromArgs(a);
    expect(a.root).toBe("/w");
    expect(spec.argv).toEqual(["/bin/sh", "-c", "echo hi"]);
    expect(spec.hostname).toBe("box");
    expect([spec.uid, spec.gid]).toEqual([65534, 65534]);
    expect(spec.limits?.memoryBytes).toBe(64 * 1024 * 1024);
    expect(spec.net).toBe("none");
  });

  test("--trace asks the jail for its timeline", () => {
    expect(specFromArgs(parseSpawnArgs(["-d", "/w", "--trace", "-p", "true"])).trace).toBe(true);
    expect(specFromArgs(parseSpawnArgs(["-d", "/w", "-p", "true"])).trace).toBeUndefined();
  });

  test("everything after -- belongs to the payload", () => {
    const a = parseSpawnArgs(["--world", "w", "--env", "A=1=2", "--", "ls", "-d", "--help"]);
    expect(a.argv).toEqual(["ls", "-d", "--help"]);
    expect(a.env).toEqual({ A: "1=2" });
    expect(a.world).toBe("w");
  });

  test("repeatable and long options", () => {
    const a = parseSpawnArgs([
      "--overlay=/o1",
      "--overlay",
      "/o2",
      "--mount",
      "/src:/dst:ro",
      "--mount",
      "/a:/b",
      "--pids",
      "10",
      "--cpus",
      "0.5",
      "--timeout",
      "2",
      "--net",
      "host",
      "--cap",
      "CHOWN",
      "--user",
      "1000:100",
      "--json",
      "--",
      "true",
    ]);
    expect(a.overlays).toEqual(["/o1", "/o2"]);
    expect(a.mounts).toEqual([
      { src: "/src", dst: "/dst", readonly: true },
      { src: "/a", dst: "/b", readonly: false },
    ]);
    const s = specFromArgs(a);
    expect(s.limits).toEqual({ memoryBytes: undefined, pids: 10, cpus: 0.5 });
    expect(s.timeoutMs).toBe(2000);
    expect([s.uid, s.gid, s.net, a.json]).toEqual([1000, 100, "host", true]);
  });

  test("mistakes name the flag", () => {
    expect(usage(["--nope"])).toBe("unknown option --nope");
    expect(usage(["-m"])).toBe("-m needs a value (MB)");
    expect(usage(["-m", "0", "-p", "x"])).toContain("-m needs a positive whole number");
    expect(usage(["--net", "bridge", "-p", "x"])).toContain("--net takes none, host or private");
    expect(usage(["--env", "NOVALUE", "-p", "x"])).toContain("--env takes K=V");
    expect(usage(["--mount", "/a", "-p", "x"])).toContain("--mount takes SRC:DST[:ro]");
    expect(usage(["-p", "x", "--", "y"])).toContain("not both");
    expect(usage(["-d", "/w"])).toBe("nothing to run");
    expect(usage(["-d", "/w", "--world", "x", "-p", "y"])).toContain("cannot be combined");
    expect(usage(["-0", "--user", "5", "-p", "y"])).toContain("either -0 or --user");
    expect(usage(["stray"])).toContain('unexpected argument "stray"');
    expect(usage(["--egress", "-p", "x"])).toContain("--egress needs -i ADDR");
    expect(usage(["-i", "auto", "--net", "host", "-p", "x"])).toContain("cannot be combined with --net host");
  });

  test("-i, --egress and -f become a private address on Linux", () => {
    if (process.platform !== "linux") return;
    const s = specFromArgs(parseSpawnArgs(["-i", "10.233.0.9", "--egress", "-f", "eth0", "-p", "x"]));
    expect([s.net, s.address, s.egress, s.iface]).toEqual(["private", "10.233.0.9", true, "eth0"]);
    const auto = specFromArgs(parseSpawnArgs(["--net", "private", "-p", "x"]));
    expect([auto.net, auto.address, auto.egress]).toEqual(["private", "auto", undefined]);
    expect(specFromArgs(parseSpawnArgs(["-p", "x"])).address).toBeUndefined();
  });
});

describe("the flag table both parsers read (zig/src/spawn-flags.txt)", () => {
  test("every flag in it is parsed, with or without its value as the table says", () => {
    const sample: Record<string, string> = {
      "-m": "64",
      "--pids": "8",
      "--cpus": "0.5",
      "--timeout": "2",
      "--env": "K=V",
      "--mount": "/tmp:/mnt",
      "--user": "1000:1000",
      "--net": "none",
      "-i": "auto",
      "-f": "eth0",
    };
    expect(SPAWN_FLAGS.size).toBeGreaterThan(20);
    for (const f of SPAWN_FLAGS.values()) {
      const args = f.value ? [f.flag, sample[f.flag] ?? "x"] : [f.flag];
      // Flags that need another one to make sense get it.
      const extra =
        f.flag === "--read-only"
          ? ["-d", "/tmp"]
          : f.flag === "-f" || f.flag === "--egress"
            ? ["-i", "auto"]
            : [];
      const run = f.flag === "-p" ? [] : ["--", "true"];
      expect(() => parseSpawnArgs([...extra, ...args, ...run])).not.toThrow();
      if (f.value) expect(() => parseSpawnArgs([f.flag])).toThrow(`${f.flag} needs a value (${f.value})`);
      else if (f.flag.startsWith("--"))
        expect(() => parseSpawnArgs([`${f.flag}=1`, "--", "true"])).toThrow("takes no value");
    }
  });

  test("the usage text names every flag, and nothing outside the table is a flag", () => {
    for (const f of SPAWN_FLAGS.keys()) expect(SPAWN_USAGE).toContain(`  ${f}`);
    expect(() => parseSpawnArgs(["--frobnicate", "--", "true"])).toThrow("unknown option --frobnicate");
  });
});
