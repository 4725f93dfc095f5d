import { describe, expect, test } from "bun:test";
import { describeEnd, signalName } from "../../src/jail/ended.ts";

const end = (reason: "exit" | "signal" | "oom" | "timeout" | "setup", more: object = {}) => ({
  reason,
  exitCode: null,
  signal: null,
  ...more,
});

describe("how a jail ended, in words", () => {
  test("an exit gives its status, a signal its name", () => {
    expect(describeEnd(end("exit", { exitCode: 3 }))).toBe("exited with status 3");
    expect(describeEnd(end("signal", { signal: 9 }))).toBe("was killed by SIGKILL");
    expect(describeEnd(end("signal", { signal: 31 }))).toBe("was killed by signal 31");
    expect(signalName(15)).toBe("SIGTERM");
  });

  test("limits say what was exceeded, when the caller knows it", () => {
    expect(describeEnd(end("oom", { signal: 9 }))).toBe("ran out of memory");
    expect(describeEnd(end("oom", { signal: 9 }), { memory: "512 MB" })).toBe(
      "ran out of memory (limit 512 MB)",
    );
    expect(describeEnd(end("timeout", { signal: 9 }), { timeout: "10 minutes" })).toBe(
      "timed out after 10 minutes",
    );
    expect(describeEnd(end("timeout"))).toBe("timed out");
    expect(describeEnd(end("setup", { error: "mount /proc: EPERM" }))).toBe(
      "could not start: mount /proc: EPERM",
    );
  });
});
