import { describe, expect, test } from "bun:test";
import { LjError } from "../../src/errors.ts";
import { capMask, encodeSpec, type JailSpec, STDIO_PIPE, validateSpec } from "../../src/jail/spec.ts";

const base: JailSpec = { argv: ["/bin/true"], layers: ["/w"] };

function invalid(spec: JailSpec): string {
  try {
    validateSpec(spec);
  } catch (e) {
    expect(e).toBeInstanceOf(LjError);
    expect((e as LjError).exitCode).toBe(64);
    return (e as LjError).message;
  }
  throw new Error("spec was accepted");
}

describe("validateSpec", () => {
  test("accepts a minimal spec", () => {
    expect(() => validateSpec(base)).not.toThrow();
  });
  test("names what is wrong", () => {
    expect(invalid({ ...base, argv: [] })).toContain("nothing to run");
    expect(invalid({ argv: ["x"] })).toContain("no root");
    expect(invalid({ ...base, root: "/r" })).toContain("not both");
    expect(invalid({ ...base, layers: ["relative"] })).toContain("absolute path");
    expect(invalid({ ...base, env: { "A=B": "1" } })).toContain('invalid environment variable name "A=B"');
    expect(invalid({ ...base, hostname: "bad host" })).toContain("invalid hostname");
    expect(invalid({ ...base, uid: -1 })).toContain("uid must be an integer");
    expect(invalid({ ...base, mounts: [{ src: "/a", dst: "/" }] })).toContain(
      "cannot replace the jail's root",
    );
    expect(invalid({ ...base, mounts: [{ src: "/a", dst: "/x/../../etc" }] })).toContain('contains ".."');
    expect(invalid({ ...base, mounts: [{ src: "/usr", dst: "/usr", idmap: true }] })).toContain(
      "idmapped mount /usr must be read-only",
    );
    expect(invalid({ ...base, limits: { memoryBytes: 1000 } })).toContain("below 1 MB");
    expect(invalid({ ...base, limits: { pids: -3 } })).toContain("limit pids must be a positive number");
    expect(invalid({ ...base, caps: ["SYS_ADMIN"] })).toContain("cannot be granted");
    expect(invalid({ ...base, caps: ["FLY"] })).toContain('unknown capability "FLY"');
    expect(invalid({ ...base, argv: ["a\0b"] })).toContain("NUL");
  });
});

describe("encodeSpec", () => {
  const ctx = {
    stage: "/s",
    stdio: [0, STDIO_PIPE, -1] as [number, number, number],
    newSession: true,
  };

  function records(buf: Uint8Array): { tag: number; payload: Uint8Array }[] {
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    expect(new TextDecoder().decode(buf.subarray(0, 4))).toBe("LJS1");
    expect(dv.getUint32(4, true)).toBe(1);
    const out: { tag: number; payload: Uint8Array }[] = [];
    for (let pos = 8; pos < buf.length; ) {
      const tag = dv.getUint16(pos, true);
      const len = dv.getUint32(pos + 4, true);
      out.push({ tag, payload: buf.subarray(pos + 8, pos + 8 + len) });
      pos += 8 + len;
    }
    return out;
  }
  const text = (p: Uint8Array) => new TextDecoder().decode(p);

  test("strings carry their NUL, layers keep their order, ints are little-endian", () => {
    const r = records(
      encodeSpec(
        {
          ...base,
          layers: ["/w", "/o1"],
          argv: ["sh", "-c", "x"],
          env: { A: "1" },
          uid: 65534,
          limits: { memoryBytes: 2 ** 33 },
        },
        ctx,
      ),
    );
    expect(r.filter((x) => x.tag === 2).map((x) => text(x.payload))).toEqual(["/w\0", "/o1\0"]);
    expect(r.filter((x) => x.tag === 7).map((x) => text(x.payload))).toEqual(["sh\0", "-c\0", "x\0"]);
    expect(text(r.find((x) => x.tag === 8)!.payload)).toBe("A=1\0");
    const uid = r.find((x) => x.tag === 10)!.payload;
    expect(new DataView(uid.buffer, uid.byteOffset).getUint32(0, true)).toBe(65534);
    const lim = r.find((x) => x.tag === 17)!.payload;
    expect(lim.length).toBe(24);
    expect(new DataView(lim.buffer, lim.byteOffset).getBigUint64(0, true)).toBe(2n ** 33n);
    const stdio = r.find((x) => x.tag === 18)!.payload;
    const sv = new DataView(stdio.buffer, stdio.byteOffset);
    expect([sv.getInt32(0, true), sv.getInt32(4, true), sv.getInt32(8, true)]).toEqual([0, -2, -1]);
  });

  test("an upper layer needs its work directory", () => {
    expect(() => encodeSpec({ ...base, upper: "/u" }, ctx)).toThrow("work directory");
    const r = records(encodeSpec({ ...base, upper: "/u" }, { ...ctx, work: "/u.work" }));
    expect(r.find((x) => x.tag === 4) && text(r.find((x) => x.tag === 4)!.payload)).toBe("/u.work\0");
  });

  test("capability names map to their kernel numbers", () => {
    expect(capMask(["CHOWN"])).toBe(1n);
    expect(capMask(["cap_kill", "SETUID"])).toBe((1n << 5n) | (1n << 7n));
  });
});

describe("status lines", () => {
  test("setup errors, ends and teardown errors are told apart", async () => {
    const { parseStatus } = await import("../../src/jail/spawn.ts");
    expect(parseStatus("E 2 exec /x: ENOENT\n")).toEqual({
      error: { errno: 2, text: "exec /x: ENOENT" },
      marks: [],
    });
    expect(parseStatus("X 3\n")).toEqual({ exitCode: 3, marks: [] });
    expect(parseStatus("S 9\n")).toEqual({ signal: 9, marks: [] });
    expect(parseStatus("X 0\nE 16 teardown: unmount /s: EBUSY\n")).toEqual({
      exitCode: 0,
      teardownError: "teardown: unmount /s: EBUSY",
      marks: [],
    });
    expect(parseStatus("")).toEqual({ marks: [] });
  });

  test("a traced jail's marks keep their order and their multi-word names", async () => {
    const { parseStatus } = await import("../../src/jail/spawn.ts");
    expect(parseStatus("T spawn call 100\nT /proc 250\nT payload ran 1000\nX 0\n")).toEqual({
      exitCode: 0,
      marks: [
        ["spawn call", 100],
        ["/proc", 250],
        ["payload ran", 1000],
      ],
    });
  });
});

describe("platforms", () => {
  test("the backend follows process.platform, and other platforms are refused clearly", async () => {
    const { supportedPlatform } = await import("../../src/jail/ffi.ts");
    expect(supportedPlatform("linux")).toBe("linux");
    expect(supportedPlatform("freebsd")).toBe("freebsd");
    let err: unknown;
    try {
      supportedPlatform("darwin");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LjError);
    expect((err as LjError).message).toBe("lightjail runs on Linux and FreeBSD, not on darwin");
    expect((err as LjError).exitCode).toBe(69);
  });
});
