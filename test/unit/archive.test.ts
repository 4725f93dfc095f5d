import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from "node:fs";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import { LjError } from "../../src/errors.ts";
import {
  ArchiveError,
  type ArchiveRule,
  type ExtractOptions,
  extractTar,
  type TarSource,
} from "../../src/store/archive.ts";
import { removeTree } from "../../src/store/tree.ts";
import { makeTar } from "../helpers/tar.ts";

let work: string;
let dest: string;

beforeEach(async () => {
  work = await fsp.mkdtemp(join(tmpdir(), "lj-archive-"));
  mkdirSync(join(work, "out"));
  dest = join(work, "out", "tree");
});
afterEach(async () => {
  await removeTree(work); // survives the 0555 directories a rootfs test leaves when not root
});

const app: ExtractOptions = { policy: "app" };
const rootfs: ExtractOptions = { policy: "rootfs" };

/** A rejection must name the rule and leave nothing on disk next to the destination. */
async function expectRejected(
  src: TarSource,
  rule: ArchiveRule,
  opts: ExtractOptions = app,
): Promise<ArchiveError> {
  let caught: unknown;
  try {
    await extractTar(src, dest, opts);
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(ArchiveError);
  const err = caught as ArchiveError;
  expect(err.rule).toBe(rule);
  expect(err.kind).toBe("invalid");
  expect(err.exitCode).toBe(65);
  expect(err.code).toBe(`archive-${rule}`);
  expect(err.message).toContain(`(${rule})`);
  expect(existsSync(dest)).toBe(false);
  expect(readdirSync(join(work, "out"))).toEqual([]);
  return err;
}

const mode = (p: string) => statSync(p).mode & 0o7777;

describe("good archives", () => {
  test("gzip round trip with files, dirs, an inside symlink and hardlink (app)", async () => {
    const t = await makeTar([
      { name: "./", type: "directory" },
      { name: "./bin/", type: "directory", mode: 0o750 },
      { name: "./bin/run", body: "#!/bin/sh\necho hi\n", mode: 0o700 },
      { name: "./README", body: "hello", mode: 0o600 },
      { name: "./lib/deep/x.txt", body: "x" },
      { name: "./lib/link", type: "symlink", linkname: "deep/x.txt" },
      { name: "./lib/up", type: "symlink", linkname: "../README" },
      { name: "./hard", type: "link", linkname: "./README" },
    ]);
    const r = await extractTar(Readable.from([gzipSync(t)]), dest, app);
    expect(r.compression).toBe("gzip");
    expect(r.entries).toBe(8);
    expect(readFileSync(join(dest, "bin/run"), "utf8")).toBe("#!/bin/sh\necho hi\n");
    expect(mode(join(dest, "bin/run"))).toBe(0o755);
    expect(mode(join(dest, "README"))).toBe(0o644);
    expect(mode(join(dest, "bin"))).toBe(0o755);
    expect(mode(dest)).toBe(0o755);
    expect(readlinkSync(join(dest, "lib/link"))).toBe("deep/x.txt");
    expect(readFileSync(join(dest, "lib/up"), "utf8")).toBe("hello");
    expect(statSync(join(dest, "hard")).ino).toBe(statSync(join(dest, "README")).ino);
    expect(readdirSync(join(work, "out"))).toEqual(["tree"]);
  });

  test("accepts a file path, a web ReadableStream and a Node stream", async () => {
    const t = await makeTar([{ name: "a.txt", body: "A" }]);
    const file = join(work, "a.tar");
    writeFileSync(file, t);
    await extractTar(file, join(work, "out", "1"), app);
    await extractTar(new Blob([t]).stream(), join(work, "out", "2"), app);
    await extractTar(Readable.from([t.subarray(0, 100), t.subarray(100)]), join(work, "out", "3"), app);
    for (const d of ["1", "2", "3"]) expect(readFileSync(join(work, "out", d, "a.txt"), "utf8")).toBe("A");
  });

  test("rootfs keeps setuid, modes and any symlink target; skips device nodes", async () => {
    const t = await makeTar([
      { name: "usr/bin/su", body: "elf", mode: 0o4755 },
      { name: "ro/", type: "directory", mode: 0o555 },
      { name: "ro/f", body: "f", mode: 0o444 },
      { name: "bin", type: "symlink", linkname: "usr/bin" },
      { name: "etc/mtab", type: "symlink", linkname: "/proc/self/mounts" },
      { name: "dev/null", type: "character-device", mode: 0o666 },
      { name: "dev/fifo", type: "fifo" },
    ]);
    const r = await extractTar(Readable.from([t]), dest, rootfs);
    expect(mode(join(dest, "usr/bin/su"))).toBe(0o4755);
    expect(mode(join(dest, "ro"))).toBe(0o555);
    expect(readFileSync(join(dest, "ro/f"), "utf8")).toBe("f");
    expect(readlinkSync(join(dest, "etc/mtab"))).toBe("/proc/self/mounts");
    expect(readlinkSync(join(dest, "bin"))).toBe("usr/bin");
    expect(existsSync(join(dest, "dev/null"))).toBe(false);
    expect(r.skippedCount).toBe(2);
    expect(r.skipped.map((s) => s.path).sort()).toEqual(["dev/fifo", "dev/null"]);
  });

  test("rootfs accepts xz when the xz tool is present", async () => {
    if (!Bun.which("xz")) return;
    const t = await makeTar([{ name: "etc/os-release", body: "ID=test\n" }]);
    const xz = Bun.spawnSync(["xz", "-c"], { stdin: t });
    const r = await extractTar(Readable.from([Buffer.from(xz.stdout)]), dest, rootfs);
    expect(r.compression).toBe("xz");
    expect(readFileSync(join(dest, "etc/os-release"), "utf8")).toBe("ID=test\n");
  });

  test("a destination that exists is a conflict and is left alone", async () => {
    mkdirSync(dest);
    writeFileSync(join(dest, "keep"), "k");
    const t = await makeTar([{ name: "a", body: "a" }]);
    const err = await extractTar(Readable.from([t]), dest, app).catch((e) => e);
    expect(err).toBeInstanceOf(LjError);
    expect((err as LjError).kind).toBe("conflict");
    expect(readdirSync(dest)).toEqual(["keep"]);
  });
});

describe("rejected archives leave nothing behind", () => {
  test("absolute path", async () => {
    const t = await makeTar([
      { name: "ok", body: "1" },
      { name: "/etc/evil", body: "x" },
    ]);
    const err = await expectRejected(Readable.from([t]), "absolute-path");
    expect(err.entry).toBe("/etc/evil");
    expect(err.message).toContain('"/etc/evil"');
  });

  test("'..' components", async () => {
    const t = await makeTar([{ name: "a/../../evil", body: "x" }]);
    await expectRejected(Readable.from([t]), "dot-dot");
    await expectRejected(Readable.from([t]), "dot-dot", rootfs);
  });

  test("empty components and backslashes", async () => {
    await expectRejected(Readable.from([await makeTar([{ name: "a////b", body: "x" }])]), "bad-name");
    await expectRejected(Readable.from([await makeTar([{ name: "a\\..\\b", body: "x" }])]), "bad-name");
  });

  test("symlink escaping the tree (app)", async () => {
    await expectRejected(
      Readable.from([await makeTar([{ name: "l", type: "symlink", linkname: "../../etc" }])]),
      "symlink-escape",
    );
    await expectRejected(
      Readable.from([await makeTar([{ name: "l", type: "symlink", linkname: "/etc/passwd" }])]),
      "symlink-escape",
    );
    // `a -> .` makes `a/..` the parent of the root: '..' after a name is refused outright.
    await expectRejected(
      Readable.from([
        await makeTar([
          { name: "a", type: "symlink", linkname: "." },
          { name: "b", type: "symlink", linkname: "a/../x" },
        ]),
      ]),
      "symlink-escape",
    );
  });

  test("symlink then a write through it, in both policies", async () => {
    const victim = join(work, "victim");
    mkdirSync(victim);
    const t = await makeTar([
      { name: "l", type: "symlink", linkname: victim },
      { name: "l/pwned", body: "x" },
    ]);
    await expectRejected(Readable.from([t]), "through-symlink", rootfs);
    expect(readdirSync(victim)).toEqual([]);
    const inside = await makeTar([
      { name: "sub/", type: "directory" },
      { name: "l", type: "symlink", linkname: "sub" },
      { name: "l/x", body: "x" },
    ]);
    await expectRejected(Readable.from([inside]), "through-symlink");
  });

  test("hardlink escaping the tree or to nothing extracted", async () => {
    for (const linkname of ["../../etc/passwd", "/etc/passwd", "never-seen"]) {
      const t = await makeTar([{ name: "h", type: "link", linkname }]);
      await expectRejected(Readable.from([t]), "hardlink-escape");
      await expectRejected(Readable.from([t]), "hardlink-escape", rootfs);
    }
  });

  test("hardlink then file overwriting it is a duplicate", async () => {
    const t = await makeTar([
      { name: "a", body: "a" },
      { name: "h", type: "link", linkname: "a" },
      { name: "h", body: "overwrite" },
    ]);
    await expectRejected(Readable.from([t]), "duplicate");
  });

  test("device nodes and fifos (app)", async () => {
    await expectRejected(
      Readable.from([await makeTar([{ name: "null", type: "character-device" }])]),
      "entry-type",
    );
    await expectRejected(Readable.from([await makeTar([{ name: "p", type: "fifo" }])]), "entry-type");
  });

  test("setuid, setgid and sticky are stripped for apps", async () => {
    const t = await makeTar([
      { name: "suid", body: "x", mode: 0o4755 },
      { name: "sgid", body: "x", mode: 0o2644 },
      { name: "sticky/", type: "directory", mode: 0o1777 },
    ]);
    await extractTar(Readable.from([t]), dest, app);
    expect(mode(join(dest, "suid"))).toBe(0o755);
    expect(mode(join(dest, "sgid"))).toBe(0o644);
    expect(mode(join(dest, "sticky"))).toBe(0o755);
  });

  test("too many entries", async () => {
    const entries = Array.from({ length: 11 }, (_, i) => ({ name: `f${i}`, body: "x" }));
    const t = await makeTar(entries);
    await expectRejected(Readable.from([t]), "too-many-entries", {
      policy: "app",
      limits: { maxEntries: 10 },
    });
  });

  test("too many bytes", async () => {
    const t = await makeTar([{ name: "big", body: Buffer.alloc(200 * 1024, 1) }]);
    await expectRejected(Readable.from([t]), "too-many-bytes", {
      policy: "app",
      limits: { maxTotalBytes: 64 * 1024 },
    });
  });

  test("file larger than the per-file cap", async () => {
    const t = await makeTar([{ name: "big", body: Buffer.alloc(8192, 1) }]);
    await expectRejected(Readable.from([t]), "file-too-large", {
      policy: "app",
      limits: { maxFileBytes: 4096 },
    });
  });

  test("gzip bomb (compression ratio)", async () => {
    const t = await makeTar([{ name: "zeros", body: Buffer.alloc(64 * 1024 * 1024) }]);
    const gz = gzipSync(t, { level: 9 });
    expect(gz.byteLength).toBeLessThan(128 * 1024);
    await expectRejected(Readable.from([gz]), "compression-ratio");
  });

  test("long path and long component", async () => {
    const long = `${"d/".repeat(600)}f`;
    await expectRejected(Readable.from([await makeTar([{ name: long, body: "x" }])]), "path-too-long");
    await expectRejected(
      Readable.from([await makeTar([{ name: "x".repeat(300), body: "x" }])]),
      "path-too-long",
    );
    await expectRejected(
      Readable.from([await makeTar([{ name: `${"a/".repeat(40)}f`, body: "x" }])]),
      "too-deep",
    );
  });

  test("duplicates, including case-fold collisions for apps", async () => {
    await expectRejected(
      Readable.from([
        await makeTar([
          { name: "a", body: "1" },
          { name: "a", body: "2" },
        ]),
      ]),
      "duplicate",
    );
    await expectRejected(
      Readable.from([
        await makeTar([
          { name: "Readme", body: "1" },
          { name: "README", body: "2" },
        ]),
      ]),
      "duplicate",
    );
  });

  test("truncated and garbage input", async () => {
    const t = await makeTar([{ name: "a", body: Buffer.alloc(4096, 7) }]);
    await expectRejected(Readable.from([t.subarray(0, 1500)]), "malformed");
    await expectRejected(Readable.from([Buffer.alloc(2048, 0x41)]), "malformed");
  });

  test("codecs outside the policy", async () => {
    if (!Bun.which("xz")) return;
    const t = await makeTar([{ name: "a", body: "a" }]);
    const xz = Buffer.from(Bun.spawnSync(["xz", "-c"], { stdin: t }).stdout);
    await expectRejected(Readable.from([xz]), "compression");
  });
});

// ---------------------------------------------------------------------------------------------
// Names with NUL or control characters, written byte by byte in every header form

type Bytes = string | Buffer;
const bytes = (v: Bytes) => (typeof v === "string" ? Buffer.from(v, "latin1") : v);

/** One 512-byte header; `format` picks the magic (ustar has a prefix field, GNU keeps times there). */
function rawHeader(o: {
  name: Bytes;
  type: string;
  size?: number;
  linkname?: Bytes;
  prefix?: Bytes;
  format?: "ustar" | "gnu";
}): Buffer {
  const b = Buffer.alloc(512);
  bytes(o.name).copy(b, 0, 0, 100);
  b.write("0000644\0", 100, "latin1");
  b.write("0000000\0", 108, "latin1");
  b.write("0000000\0", 116, "latin1");
  b.write(`${(o.size ?? 0).toString(8).padStart(11, "0")}\0`, 124, "latin1");
  b.write("14700000000\0", 136, "latin1");
  b.write(o.type, 156, "latin1");
  if (o.linkname !== undefined) bytes(o.linkname).copy(b, 157, 0, 100);
  if (o.format === "gnu") {
    b.write("ustar  \0", 257, "latin1");
    b.write("14700000000\0", 345, "latin1"); // atime, where ustar has its prefix
  } else {
    b.write("ustar\0" + "00", 257, "latin1");
    if (o.prefix !== undefined) bytes(o.prefix).copy(b, 345, 0, 155);
  }
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
  return b;
}

const pad = (data: Buffer) => Buffer.concat([data, Buffer.alloc((512 - (data.byteLength % 512)) % 512)]);

/** A header and its body, padded. */
const rawEntry = (h: Parameters<typeof rawHeader>[0], body: Bytes = "") => {
  const data = bytes(body);
  return Buffer.concat([rawHeader({ ...h, size: data.byteLength }), pad(data)]);
};

/** A PAX extended header (`x`, or `g` for global) holding the given records. */
function paxEntry(records: Record<string, Bytes>, type = "x"): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(records)) {
    const rest = Buffer.concat([Buffer.from(` ${k}=`), bytes(v), Buffer.from("\n")]);
    let len = rest.byteLength + 1;
    while (String(len).length + rest.byteLength !== len) len++;
    parts.push(Buffer.concat([Buffer.from(String(len)), rest]));
  }
  return rawEntry({ name: "PaxHeader/x", type }, Buffer.concat(parts));
}

/** A good file first (so a failure has something to clean up), the entries, the end blocks. */
const rawTar = (...entries: Buffer[]) =>
  Readable.from([
    Buffer.concat([rawEntry({ name: "ok.txt", type: "0" }, "fine"), ...entries, Buffer.alloc(1024)]),
  ]);

describe("names with NUL or control characters", () => {
  /** Rejected as bad-name in both policies, the message naming the entry escaped. */
  async function refused(make: () => Readable, shown: string, what: RegExp) {
    for (const opts of [app, rootfs]) {
      const err = await expectRejected(make(), "bad-name", opts);
      expect(err.message).toContain(shown);
      expect(err.message).toMatch(what);
      expect([...err.message].filter((c) => c.charCodeAt(0) < 0x20 || c === "\x7f")).toEqual([]);
    }
  }

  test("ustar name: a NUL inside the field, and control characters", async () => {
    await refused(
      () => rawTar(rawEntry({ name: "evil\0hidden", type: "0" }, "x")),
      '"evil\\u0000hidden"',
      /NUL byte inside the name/,
    );
    await refused(
      () => rawTar(rawEntry({ name: "a\nb.txt", type: "0" }, "x")),
      '"a\\nb.txt"',
      /control character 0x0a in the name/,
    );
    await refused(
      () => rawTar(rawEntry({ name: "del\x7f", type: "0" }, "x")),
      '"del\\u007f"',
      /control character 0x7f/,
    );
    await refused(() => rawTar(rawEntry({ name: "dir\x01/", type: "5" })), '"dir\\u0001/"', /0x01/);
  });

  test("ustar prefix: a NUL inside it, and control characters", async () => {
    await refused(
      () => rawTar(rawEntry({ name: "f", prefix: "pre\0fix", type: "0" }, "x")),
      '"pre\\u0000fix"',
      /NUL byte inside the name prefix/,
    );
    await refused(
      () => rawTar(rawEntry({ name: "f", prefix: "p\x1b[31m", type: "0" }, "x")),
      '"p\\u001b[31m/f"',
      /0x1b/,
    );
  });

  test("ustar link names of symlinks and hardlinks", async () => {
    await refused(
      () => rawTar(rawEntry({ name: "s", linkname: "ok.txt\0/etc/passwd", type: "2" })),
      '"ok.txt\\u0000/etc/passwd"',
      /NUL byte inside the link name/,
    );
    await refused(
      () => rawTar(rawEntry({ name: "s", linkname: "ok\r.txt", type: "2" })),
      '"s"',
      /control character 0x0d in the link name/,
    );
    await refused(
      () => rawTar(rawEntry({ name: "h", linkname: "ok.txt\t", type: "1" })),
      '"h"',
      /control character 0x09 in the link name/,
    );
  });

  test("GNU long name (L) and long link (K)", async () => {
    const long = (type: "L" | "K", data: Bytes) =>
      rawEntry({ name: "././@LongLink", type, format: "gnu" }, data);
    const file = rawEntry({ name: "short", type: "0", format: "gnu" }, "x");
    const link = rawEntry({ name: "short", linkname: "t", type: "2", format: "gnu" });
    await refused(
      () => rawTar(long("L", "long\0name\0"), file),
      '"long\\u0000name"',
      /NUL byte inside the GNU long name/,
    );
    await refused(() => rawTar(long("L", "long\nname\0"), file), '"long\\nname"', /0x0a in the name/);
    await refused(
      () => rawTar(long("K", "ok.txt\0../../x\0"), link),
      '"ok.txt\\u0000../../x"',
      /NUL byte inside the GNU long link name/,
    );
    await refused(() => rawTar(long("K", "ok\x08.txt\0"), link), '"short"', /0x08 in the link name/);
  });

  test("PAX path and linkpath records, local and global", async () => {
    const file = rawEntry({ name: "short", type: "0" }, "x");
    const link = rawEntry({ name: "short", linkname: "t", type: "2" });
    await refused(
      () => rawTar(paxEntry({ path: "pax\0name" }), file),
      '"pax\\u0000name"',
      /0x00 in the PAX path/,
    );
    await refused(
      () => rawTar(paxEntry({ path: "pax\x1fname" }), file),
      '"pax\\u001fname"',
      /0x1f in the PAX path/,
    );
    await refused(
      () => rawTar(paxEntry({ linkpath: "ok.txt\0x" }), link),
      '"ok.txt\\u0000x"',
      /0x00 in the PAX linkpath/,
    );
    await refused(
      () => rawTar(paxEntry({ path: "glob\x7f" }, "g"), file),
      '"glob\\u007f"',
      /0x7f in the PAX path/,
    );
  });

  test("the same forms with clean names extract (GNU times where ustar has its prefix)", async () => {
    const r = await extractTar(
      rawTar(
        rawEntry({ name: "f", prefix: "pre", type: "0" }, "1"),
        rawEntry({ name: "././@LongLink", type: "L", format: "gnu" }, `${"l".repeat(120)}\0`),
        rawEntry({ name: "short", type: "0", format: "gnu" }, "2"),
        paxEntry({ path: "pax-name", linkpath: "ok.txt" }),
        rawEntry({ name: "short2", linkname: "t", type: "2" }),
      ),
      dest,
      app,
    );
    expect(r.entries).toBe(4);
    expect(readFileSync(join(dest, "pre", "f"), "utf8")).toBe("1");
    expect(readFileSync(join(dest, "l".repeat(120)), "utf8")).toBe("2");
    expect(readlinkSync(join(dest, "pax-name"))).toBe("ok.txt");
  });
});
