import { describe, expect, test } from "bun:test";
import { jailOwnerLive, ownerId, ownerIdLive } from "../../src/jail/owner.ts";

describe("owner ids", () => {
  test("this process's id and its jails' ids name a live owner; other shapes never do", () => {
    const me = ownerId();
    expect(ownerIdLive(me)).toBe(true);
    expect(jailOwnerLive(`${me}.7`)).toBe(true);
    // A reused pid with another start time is another process.
    expect(ownerIdLive(`${process.pid}.1`)).toBe(false);
    for (const bad of [undefined, "", `${me}.7`, "x.1", `${process.pid}`])
      expect(ownerIdLive(bad)).toBe(false);
    for (const bad of [me, `${me}.x`, `${me}.7.1`]) expect(jailOwnerLive(bad)).toBe(false);
  });
});
