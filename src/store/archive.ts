import { spawn } from "node:child_process";
import { createReadStream, constants as fsc } from "node:fs";
import * as fsp from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { Readable, type Transform } from "node:stream";
import * as zlib from "node:zlib";
import * as tar from "tar-stream";
import { LjError } from "../errors.ts";
import { removeTree } from "./tree.ts";

/**
 * Safe streaming tar extraction.
 *
 * The archive is never buffered whole: bytes flow source -> counter -> decompressor -> counter
 * -> tar parser -> files, with backpressure. Everything is created inside a fresh temporary
 * sibling of `dest` that only this process writes to, and renamed into place on success.
 *
 * Because nobody else writes into the temporary tree, an in-memory map of what earlier entries
 * created is the authority on what every path is: an entry whose parent is a symlink or a file
 * created by an earlier entry is rejected, symlinks are only created after every other entry
 * (so nothing is ever written through one), files are opened O_CREAT|O_EXCL|O_NOFOLLOW and
 * each parent directory is lstat-verified once before it is first used.
 *
 * Policies:
 * - `app`: regular files and directories; symlinks only with relative targets that cannot leave
 *   the tree (see `appSymlinkInside`); hardlinks only to regular files extracted earlier;
 *   modes normalised (directories 0755, files 0644 or 0755 if any exec bit), setuid/setgid/sticky and ownership dropped; tight caps.
 * - `rootfs`: any symlink target (it is resolved inside the jail root at run time), hardlinks to
 *   earlier entries, device nodes and FIFOs skipped (a jail gets a fresh /dev), modes kept
 *   including setuid (jails run with no_new_privs), ownership kept when running as root.
 */

export type ArchivePolicy = "app" | "rootfs";
export type Compression = "none" | "gzip" | "zstd" | "xz" | "bzip2";

export interface ExtractLimits {
  /** Decompressed tar stream bytes (headers and padding included). */
  maxTotalBytes: number;
  /** Body bytes of any one entry. */
  maxFileBytes: number;
  maxEntries: number;
  /** Bytes of a normalised entry path (and of a link target). */
  maxPathBytes: number;
  maxComponentBytes: number;
  maxDepth: number;
  /** Decompressed / compressed bytes. */
  maxRatio: number;
  /** The ratio is judged only once this many bytes came out (tar padding compresses very well). */
  ratioGraceBytes: number;
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

export const defaultLimits: Readonly<Record<ArchivePolicy, Readonly<ExtractLimits>>> = {
  app: {
    maxTotalBytes: 1 * GiB,
    maxFileBytes: 512 * MiB,
    maxEntries: 20_000,
    maxPathBytes: 1024,
    maxComponentBytes: 255,
    maxDepth: 32,
    maxRatio: 100,
    ratioGraceBytes: 1 * MiB,
  },
  rootfs: {
    maxTotalBytes: 32 * GiB,
    maxFileBytes: 8 * GiB,
    maxEntries: 2_000_000,
    maxPathBytes: 4096,
    maxComponentBytes: 255,
    maxDepth: 256,
    maxRatio: 1000,
    ratioGraceBytes: 16 * MiB,
  },
};

const allowedCompression: Record<ArchivePolicy, readonly Compression[]> = {
  app: ["none", "gzip", "zstd"],
  rootfs: ["none", "gzip", "zstd", "xz", "bzip2"],
};

export type ArchiveRule =
  | "absolute-path"
  | "dot-dot"
  | "bad-name"
  | "path-too-long"
  | "too-deep"
  | "entry-type"
  | "symlink-escape"
  | "hardlink-escape"
  | "through-symlink"
  | "not-a-directory"
  | "duplicate"
  | "too-many-entries"
  | "too-many-bytes"
  | "file-too-large"
  | "compression-ratio"
  | "compression"
  | "malformed";

/** A rejected archive: kind `invalid`, code `archive-<rule>`, message names the entry and rule. */
export class ArchiveError extends LjError {
  readonly rule: ArchiveRule;
  readonly entry?: string;

  constructor(rule: ArchiveRule, entry: string | undefined, detail: string, cause?: unknown) {
    const where = entry === undefined ? "archive rejected" : `archive entry ${showName(entry)} rejected`;
    super("invalid", `archive-${rule}`, `${where} (${rule}): ${detail}`, {
      cause,
      hint: "nothing was extracted; fix the archive and try again",
    });
    this.rule = rule;
    this.entry = entry;
  }
}

export type TarSource = string | AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>;

export interface ExtractProgress {
  entries: number;
  /** Decompressed bytes read so far. */
  bytes: number;
}

export interface ExtractOptions {
  policy: ArchivePolicy;
  limits?: Partial<ExtractLimits>;
  /** `auto` (default) sniffs magic bytes. */
  compression?: Compression | "auto";
  onProgress?: (p: ExtractProgress) => void;
  signal?: AbortSignal;
}

export interface ExtractResult {
  entries: number;
  /** Body bytes written to files. */
  fileBytes: number;
  compression: Compression;
  /** Entries deliberately not created (rootfs device nodes and FIFOs); at most 100 listed. */
  skipped: { path: string; reason: string }[];
  skippedCount: number;
}

/**
 * Extract a tar (optionally gzip/zstd/xz/bzip2 compressed) into `dest`, which must not exist.
 * Builds in a temporary sibling and renames it into place only on success; on any failure the
 * temporary tree is removed and the error (an ArchiveError for a rejected archive) is thrown.
 */
export async function extractTar(
  source: TarSource,
  dest: string,
  opts: ExtractOptions,
): Promise<ExtractResult> {
  const target = resolve(dest);
  if (await lexists(target)) {
    throw new LjError("conflict", "exists", `cannot extract into ${target}: it already exists`);
  }
  const parent = dirname(target);
  await fsp.mkdir(parent, { recursive: true });
  const tmp = await fsp.mkdtemp(join(parent, `.tmp-${basename(target)}-`));
  try {
    const result = await extractInto(source, tmp, opts);
    try {
      await fsp.rename(tmp, target);
    } catch (e) {
      throw new LjError("conflict", "exists", `cannot move extracted tree into ${target}: ${errText(e)}`, {
        cause: e,
      });
    }
    return result;
  } catch (e) {
    await removeTree(tmp);
    throw e;
  }
}

/**
 * Extract into `dir`, an existing EMPTY directory that only this call writes to. Not atomic:
 * callers that build something bigger (worlds) use this inside their own temporary directory.
 */
export async function extractInto(
  source: TarSource,
  dir: string,
  opts: ExtractOptions,
): Promise<ExtractResult> {
  const existing = await fsp.readdir(dir);
  if (existing.length > 0)
    throw new LjError("internal", "not-empty", `extraction directory ${dir} is not empty`);
  const limits: ExtractLimits = { ...defaultLimits[opts.policy], ...opts.limits };
  const raw = await openSource(source);
  const counters = { compressed: 0, decompressed: 0 };
  const head = await sniff(countBytes(raw, (n) => (counters.compressed += n)));
  const compression =
    opts.compression === undefined || opts.compression === "auto" ? detect(head.head) : opts.compression;
  if (!allowedCompression[opts.policy].includes(compression)) {
    throw new ArchiveError(
      "compression",
      undefined,
      `${compression} is not accepted for ${opts.policy} archives`,
    );
  }
  const plain = guardDecompressed(
    decompress(compression, head.stream),
    compression,
    counters,
    limits,
    opts.signal,
  );
  const writer = new TreeWriter(dir, opts.policy, limits);
  const state = { entries: 0 };
  await parseTar(plain, async (header, body) => {
    state.entries++;
    if (state.entries > limits.maxEntries) {
      throw new ArchiveError("too-many-entries", header.name, `more than ${limits.maxEntries} entries`);
    }
    await writer.entry(header, body);
    if (opts.onProgress && state.entries % 500 === 0) {
      opts.onProgress({ entries: state.entries, bytes: counters.decompressed });
    }
  });
  await writer.finish();
  opts.onProgress?.({ entries: state.entries, bytes: counters.decompressed });
  return {
    entries: state.entries,
    fileBytes: writer.fileBytes,
    compression,
    skipped: writer.skipped,
    skippedCount: writer.skippedCount,
  };
}

// ---------------------------------------------------------------------------------------------
// Entry names

/** Split an archive path into checked components ([] is the archive root). Throws ArchiveError. */
export function normalizeEntryName(raw: string, policy: ArchivePolicy, limits: ExtractLimits): string[] {
  if (raw.length === 0) throw new ArchiveError("bad-name", raw, "empty name");
  refuseControl(raw, raw, "name");
  if (policy === "app" && raw.includes("\\")) throw new ArchiveError("bad-name", raw, "backslash in name");
  if (policy === "app" && /^[A-Za-z]:/.test(raw))
    throw new ArchiveError("absolute-path", raw, "drive-letter path");
  if (raw.startsWith("/")) throw new ArchiveError("absolute-path", raw, "absolute paths are not allowed");
  let name = raw;
  while (name.startsWith("./")) name = name.slice(2);
  if (name === "." || name === "") return [];
  if (name.endsWith("/")) name = name.slice(0, -1);
  if (Buffer.byteLength(name) > limits.maxPathBytes) {
    throw new ArchiveError("path-too-long", raw, `path longer than ${limits.maxPathBytes} bytes`);
  }
  const comps = name.split("/");
  if (comps.length > limits.maxDepth) {
    throw new ArchiveError("too-deep", raw, `more than ${limits.maxDepth} path components`);
  }
  for (const c of comps) {
    if (c === "..") throw new ArchiveError("dot-dot", raw, "'..' path components are not allowed");
    if (c === "" || c === ".") throw new ArchiveError("bad-name", raw, "empty or '.' path component");
    if (Buffer.byteLength(c) > limits.maxComponentBytes) {
      throw new ArchiveError(
        "path-too-long",
        raw,
        `a path component is longer than ${limits.maxComponentBytes} bytes`,
      );
    }
  }
  return comps;
}

/**
 * App symlinks: a relative target whose `..` components all come first and do not climb above
 * the root. Every directory on a link's own path is a real directory (entries under symlinks
 * are rejected), so the leading `..` walk is physical; what follows only descends, and any
 * symlink met while descending is itself bound by this rule, so no chain can leave the tree.
 */
export function appSymlinkInside(linkComps: readonly string[], target: string): boolean {
  if (target.length === 0 || target.startsWith("/") || target.includes("\\") || target.includes("\0"))
    return false;
  let ups = 0;
  let descended = false;
  for (const p of target.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") {
      if (descended) return false;
      ups++;
    } else {
      descended = true;
    }
  }
  return ups <= linkComps.length - 1;
}

/**
 * Names with control characters (0x00-0x1f, 0x7f) are refused in both policies: no real tree
 * needs them, and they forge log lines, terminal output and tools that read names line by line.
 */
function refuseControl(entry: string, value: string, what: string): void {
  let c = -1;
  for (let i = 0; i < value.length && c < 0; i++) {
    const u = value.charCodeAt(i);
    if (u < 0x20 || u === 0x7f) c = u;
  }
  if (c < 0) return;
  const code = c.toString(16).padStart(2, "0");
  throw new ArchiveError("bad-name", entry, `control character 0x${code} in the ${what}`);
}

/**
 * The name fields tar-stream reads as C strings (ustar name, linkname and prefix; GNU long
 * name `L` and long link `K`) end at their first NUL, so a NUL inside a name would silently cut
 * it. A field holding anything but NULs after its first NUL is refused here, from the raw bytes,
 * before tar-stream decodes them. PAX records keep NULs in the decoded value, which the decoded
 * name checks refuse.
 */
function rawNameCheck(ex: tar.Extract): void {
  const x = ex as unknown as RawExtract;
  const buffer = x._buffer;
  if (
    typeof x._consumeHeader !== "function" ||
    typeof x._decodeLongHeader !== "function" ||
    !("_pax" in x && "_paxGlobal" in x) ||
    typeof buffer?.shift !== "function"
  ) {
    // A tar-stream whose internals moved: refuse to parse rather than parse unchecked.
    throw new LjError("internal", "tar-parser", "tar-stream's header hooks are missing (version changed?)");
  }
  const consumeHeader = x._consumeHeader.bind(x);
  const decodeLong = x._decodeLongHeader.bind(x);
  const shift = buffer.shift.bind(buffer);
  let inHeader = false;
  // The header block is taken off the buffer inside _consumeHeader's own try, so a throw here
  // fails the parse like a bad checksum does.
  buffer.shift = (n: number) => {
    const b = shift(n);
    if (inHeader && n === 512 && b) checkUstarBlock(b);
    return b;
  };
  x._consumeHeader = () => {
    inHeader = true;
    try {
      return consumeHeader();
    } finally {
      inHeader = false;
    }
  };
  x._decodeLongHeader = (buf: Uint8Array) => {
    const type = x._header?.type;
    if (type === "gnu-long-path" || type === "gnu-long-link-path")
      checkField(buf, 0, buf.byteLength, type === "gnu-long-path" ? "GNU long name" : "GNU long link name");
    decodeLong(buf);
    // A global header's path applies to no entry in tar-stream but to every later one in other
    // tools: its names are held to the same rule.
    const pax = type === "pax-global-header" ? x._paxGlobal : type === "pax-header" ? x._pax : null;
    for (const [key, what] of [
      ["path", "name"],
      ["linkpath", "link name"],
    ] as const) {
      const v = pax?.[key];
      if (typeof v === "string") refuseControl(v, v, `PAX ${key} (${what})`);
    }
  };
}

interface RawExtract {
  _buffer: { shift(n: number): Uint8Array | null };
  _consumeHeader(): boolean;
  _decodeLongHeader(buf: Uint8Array): void;
  _header: { type: string | null } | null;
  _pax: Record<string, string> | null;
  _paxGlobal: Record<string, string> | null;
}

const USTAR_MAGIC = Buffer.from("ustar\0", "latin1");

function checkUstarBlock(b: Uint8Array): void {
  checkField(b, 0, 100, "name");
  checkField(b, 157, 100, "link name");
  // Only ustar has a prefix there (GNU headers keep times at that offset), as tar-stream reads it.
  if (Buffer.from(b.buffer, b.byteOffset + 257, 6).equals(USTAR_MAGIC))
    checkField(b, 345, 155, "name prefix");
}

/** A NUL-terminated field: after the first NUL only NULs may follow. */
function checkField(b: Uint8Array, off: number, len: number, what: string): void {
  const f = b.subarray(off, off + len);
  const nul = f.indexOf(0);
  if (nul < 0) return;
  for (let i = nul + 1; i < f.byteLength; i++) {
    if (f[i] !== 0) {
      let end = f.byteLength;
      while (end > 0 && f[end - 1] === 0) end--;
      const shown = Buffer.from(f.subarray(0, end)).toString("utf8");
      throw new ArchiveError("bad-name", shown, `NUL byte inside the ${what}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Writing the tree

/** tar-stream's header as it is at run time: `type` is null for typeflags it does not know (GNU sparse...). */
type TarHeader = Omit<tar.Header, "type" | "linkname"> & {
  type: tar.Header["type"] | null;
  linkname: string | null;
};

type NodeKind = "dir" | "implicit-dir" | "file" | "symlink";

interface Deferred {
  rel: string;
  mode: number;
  uid: number;
  gid: number;
  mtime?: Date;
}

class TreeWriter {
  readonly skipped: { path: string; reason: string }[] = [];
  skippedCount = 0;
  fileBytes = 0;
  private readonly nodes = new Map<string, NodeKind>();
  private readonly verified = new Set<string>([""]);
  private readonly folded = new Set<string>();
  private readonly dirs = new Map<string, Deferred>();
  private readonly symlinks: (Deferred & { target: string })[] = [];
  private rootMode: number | undefined;
  private readonly chown: boolean;

  constructor(
    private readonly root: string,
    private readonly policy: ArchivePolicy,
    private readonly limits: ExtractLimits,
  ) {
    this.chown = policy === "rootfs" && process.getuid?.() === 0;
  }

  private abs(rel: string): string {
    return rel === "" ? this.root : join(this.root, rel);
  }

  async entry(h: TarHeader, body: AsyncIterable<Uint8Array>): Promise<void> {
    const comps = normalizeEntryName(h.name, this.policy, this.limits);
    // Whatever the type: a link name nobody uses is still a name another tool may act on.
    if (h.linkname !== null && h.linkname !== undefined) refuseControl(h.name, h.linkname, "link name");
    const rel = comps.join("/");
    const type = h.type;
    if (rel === "") {
      if (type !== "directory")
        throw new ArchiveError("bad-name", h.name, "the archive root must be a directory");
      this.rootMode = this.policy === "rootfs" ? (h.mode ?? 0o755) & 0o7777 : undefined;
      return drain(body);
    }
    await this.ensureParents(h.name, comps);
    this.checkDuplicate(h.name, rel, type);
    switch (type) {
      case "directory":
        return this.directory(h, rel, body);
      case "file":
        return this.file(h, rel, body);
      case "contiguous-file":
        if (this.policy === "rootfs") return this.file(h, rel, body);
        break;
      case "symlink":
        return this.symlink(h, comps, rel, body);
      case "link":
        return this.hardlink(h, rel, body);
      case "character-device":
      case "block-device":
      case "fifo":
        if (this.policy === "rootfs") {
          this.skip(rel, `${type} (a jail gets a fresh /dev)`);
          return drain(body);
        }
        break;
    }
    throw new ArchiveError("entry-type", h.name, `entry type ${type ?? "unknown"} is not allowed`);
  }

  private skip(path: string, reason: string): void {
    this.skippedCount++;
    if (this.skipped.length < 100) this.skipped.push({ path, reason });
  }

  private async ensureParents(name: string, comps: string[]): Promise<void> {
    for (let i = 1; i < comps.length; i++) {
      const p = comps.slice(0, i).join("/");
      const kind = this.nodes.get(p);
      if (kind === "symlink") {
        throw new ArchiveError(
          "through-symlink",
          name,
          `parent ${showName(p)} is a symlink created by an earlier entry`,
        );
      }
      if (kind === "file") throw new ArchiveError("not-a-directory", name, `parent ${showName(p)} is a file`);
      if (kind === undefined) {
        this.claimFolded(name, p);
        await fsp.mkdir(this.abs(p), { mode: 0o700 });
        this.nodes.set(p, "implicit-dir");
        this.dirs.set(p, { rel: p, mode: 0o755, uid: 0, gid: 0 });
      }
      if (!this.verified.has(p)) {
        const st = await fsp.lstat(this.abs(p));
        if (!st.isDirectory()) {
          throw new ArchiveError(
            "through-symlink",
            name,
            `parent ${showName(p)} is not a real directory on disk`,
          );
        }
        this.verified.add(p);
      }
    }
  }

  private checkDuplicate(name: string, rel: string, type: TarHeader["type"]): void {
    const kind = this.nodes.get(rel);
    if (kind !== undefined) {
      const bothDirs = type === "directory" && (kind === "dir" || kind === "implicit-dir");
      if (!bothDirs || (kind === "dir" && this.policy === "app")) {
        throw new ArchiveError("duplicate", name, "the path was already extracted by an earlier entry");
      }
      return;
    }
    this.claimFolded(name, rel);
  }

  /** App trees may be copied to case-insensitive or normalising filesystems: such twins are one path. */
  private claimFolded(name: string, rel: string): void {
    if (this.policy !== "app") return;
    const key = rel.normalize("NFC").toLowerCase();
    if (this.folded.has(key)) {
      throw new ArchiveError("duplicate", name, "collides with an earlier entry after case folding and NFC");
    }
    this.folded.add(key);
  }

  private async directory(h: TarHeader, rel: string, body: AsyncIterable<Uint8Array>): Promise<void> {
    if (!this.nodes.has(rel)) await fsp.mkdir(this.abs(rel), { mode: 0o700 });
    this.nodes.set(rel, "dir");
    const mode = this.policy === "app" ? 0o755 : (h.mode ?? 0o755) & 0o7777;
    this.dirs.set(rel, { rel, mode, uid: h.uid ?? 0, gid: h.gid ?? 0, mtime: h.mtime });
    return drain(body);
  }

  private async file(h: TarHeader, rel: string, body: AsyncIterable<Uint8Array>): Promise<void> {
    const declared = h.size ?? 0;
    if (declared > this.limits.maxFileBytes) {
      throw new ArchiveError(
        "file-too-large",
        h.name,
        `${declared} bytes is more than ${this.limits.maxFileBytes}`,
      );
    }
    this.nodes.set(rel, "file");
    const flags = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;
    const fh = await fsp.open(this.abs(rel), flags, 0o600);
    try {
      let written = 0;
      for await (const chunk of body) {
        written += chunk.byteLength;
        if (written > this.limits.maxFileBytes) {
          throw new ArchiveError("file-too-large", h.name, `more than ${this.limits.maxFileBytes} bytes`);
        }
        await fh.write(chunk);
      }
      this.fileBytes += written;
      const mode = h.mode ?? 0o644;
      if (this.policy === "app") {
        await fh.chmod(mode & 0o111 ? 0o755 : 0o644);
      } else {
        // chown first: it clears setuid/setgid, which chmod then restores.
        if (this.chown) await fh.chown(h.uid ?? 0, h.gid ?? 0);
        await fh.chmod(mode & 0o7777);
        if (h.mtime) await fh.utimes(h.mtime, h.mtime);
      }
    } finally {
      await fh.close();
    }
  }

  private async symlink(h: TarHeader, comps: string[], rel: string, body: AsyncIterable<Uint8Array>) {
    const target = h.linkname ?? "";
    if (target.length === 0) throw new ArchiveError("bad-name", h.name, "empty symlink target");
    if (Buffer.byteLength(target) > this.limits.maxPathBytes) {
      throw new ArchiveError(
        "path-too-long",
        h.name,
        `symlink target longer than ${this.limits.maxPathBytes} bytes`,
      );
    }
    if (this.policy === "app" && !appSymlinkInside(comps, target)) {
      throw new ArchiveError("symlink-escape", h.name, `symlink target ${showName(target)} leaves the tree`);
    }
    this.nodes.set(rel, "symlink");
    this.symlinks.push({ rel, target, mode: 0, uid: h.uid ?? 0, gid: h.gid ?? 0, mtime: h.mtime });
    return drain(body);
  }

  private async hardlink(h: TarHeader, rel: string, body: AsyncIterable<Uint8Array>): Promise<void> {
    const raw = h.linkname ?? "";
    let target: string;
    try {
      target = normalizeEntryName(raw, this.policy, this.limits).join("/");
    } catch (e) {
      const why = e instanceof ArchiveError ? e.rule : "bad target";
      throw new ArchiveError(
        "hardlink-escape",
        h.name,
        `hardlink target ${showName(raw)} is not inside (${why})`,
      );
    }
    const kind = this.nodes.get(target);
    if (kind === "file") {
      await fsp.link(this.abs(target), this.abs(rel));
      this.nodes.set(rel, "file");
    } else if (kind === "symlink" && this.policy === "rootfs") {
      const orig = this.symlinks.find((s) => s.rel === target);
      if (!orig)
        throw new ArchiveError("hardlink-escape", h.name, "hardlink to a symlink that was not recorded");
      this.nodes.set(rel, "symlink");
      this.symlinks.push({ ...orig, rel });
    } else {
      throw new ArchiveError(
        "hardlink-escape",
        h.name,
        `hardlink target ${showName(raw)} is not a regular file extracted by an earlier entry`,
      );
    }
    return drain(body);
  }

  /** Symlinks last, then directory modes deepest first (a 0555 directory must be filled first). */
  async finish(): Promise<void> {
    for (const s of this.symlinks) {
      const p = this.abs(s.rel);
      await fsp.symlink(s.target, p);
      if (this.chown) await fsp.lchown(p, s.uid, s.gid);
      if (s.mtime && this.policy === "rootfs") await fsp.lutimes(p, s.mtime, s.mtime);
    }
    const dirs = [...this.dirs.values()].sort((a, b) => depth(b.rel) - depth(a.rel));
    for (const d of dirs) {
      const p = this.abs(d.rel);
      if (this.chown) await fsp.lchown(p, d.uid, d.gid);
      await fsp.chmod(p, d.mode);
      if (d.mtime && this.policy === "rootfs") await fsp.utimes(p, d.mtime, d.mtime);
    }
    await fsp.chmod(this.root, this.rootMode ?? 0o755);
  }
}

const depth = (rel: string) => rel.split("/").length;

async function drain(body: AsyncIterable<Uint8Array>): Promise<void> {
  for await (const _ of body) {
    // bytes are already counted on the decompressed stream
  }
}

// ---------------------------------------------------------------------------------------------
// Tar parsing with backpressure

type EntryHandler = (header: TarHeader, body: AsyncIterable<Uint8Array>) => Promise<void>;

async function parseTar(input: AsyncIterable<Uint8Array>, onEntry: EntryHandler): Promise<void> {
  const ex = tar.extract();
  rawNameCheck(ex);
  let failure: unknown;
  let inflight: Promise<void> = Promise.resolve();
  const fail = (e: unknown) => {
    failure ??= e;
    if (!ex.destroyed) ex.destroy(e instanceof Error ? e : new Error(String(e)));
  };
  const finished = new Promise<void>((res, rej) => {
    ex.on("entry", (header, body, next) => {
      body.on("error", () => {}); // surfaces through the body's iterator; without this it is unhandled
      inflight = onEntry(header, body as unknown as AsyncIterable<Uint8Array>).then(() => next(), fail);
    });
    ex.on("finish", () => res());
    ex.on("error", (e: unknown) => rej(failure ?? e));
    ex.on("close", () => {
      if (failure !== undefined) rej(failure);
    });
  });
  finished.catch(() => {});
  try {
    for await (const chunk of input) {
      if (ex.destroyed) break;
      if (!ex.write(chunk)) await drainOrClose(ex);
    }
    if (!ex.destroyed) ex.end(undefined);
  } catch (e) {
    fail(e);
  }
  try {
    await finished;
    await inflight;
  } catch (e) {
    await inflight.catch(() => {});
    throw asArchiveError(failure ?? e);
  }
  if (failure !== undefined) throw asArchiveError(failure);
}

function drainOrClose(s: tar.Extract): Promise<void> {
  return new Promise((res) => {
    const done = () => {
      s.off("drain", done);
      s.off("close", done);
      res();
    };
    s.on("drain", done);
    s.on("close", done);
  });
}

function asArchiveError(e: unknown): unknown {
  if (e instanceof LjError) return e;
  if (isErrno(e)) return e; // disk full, permissions: a local problem, not a bad archive
  return new ArchiveError("malformed", undefined, errText(e), e);
}

// ---------------------------------------------------------------------------------------------
// Bytes in: sources, counting, decompression

async function openSource(source: TarSource): Promise<AsyncIterable<Uint8Array>> {
  if (typeof source === "string") {
    const st = await fsp.stat(source).catch((e) => {
      throw new LjError("not-found", "archive-not-found", `archive ${source} cannot be read: ${errText(e)}`, {
        cause: e,
      });
    });
    if (!st.isFile())
      throw new LjError("usage", "archive-not-file", `archive ${source} is not a regular file`);
    return createReadStream(source, { highWaterMark: 256 * 1024 });
  }
  if (isWebStream(source)) return fromWeb(source);
  return source;
}

function isWebStream(s: unknown): s is ReadableStream<Uint8Array> {
  return typeof (s as ReadableStream).getReader === "function";
}

async function* fromWeb(s: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = s.getReader();
  let done = false;
  try {
    for (;;) {
      const r = await reader.read();
      if (r.done) {
        done = true;
        return;
      }
      yield r.value;
    }
  } finally {
    if (!done) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

async function* countBytes(
  src: AsyncIterable<Uint8Array>,
  add: (n: number) => void,
): AsyncGenerator<Uint8Array> {
  for await (const chunk of src) {
    add(chunk.byteLength);
    yield chunk;
  }
}

/** Read at least 6 bytes (for magic numbers) and return them with a stream that replays them. */
async function sniff(
  src: AsyncGenerator<Uint8Array>,
): Promise<{ head: Uint8Array; stream: AsyncGenerator<Uint8Array> }> {
  const got: Uint8Array[] = [];
  let n = 0;
  while (n < 6) {
    const r = await src.next();
    if (r.done) break;
    got.push(r.value);
    n += r.value.byteLength;
  }
  const head = Buffer.concat(got);
  async function* replay(): AsyncGenerator<Uint8Array> {
    if (head.byteLength > 0) yield head;
    yield* src;
  }
  return { head, stream: replay() };
}

export function detect(head: Uint8Array): Compression {
  const starts = (...b: number[]) => b.every((v, i) => head[i] === v);
  if (starts(0x1f, 0x8b)) return "gzip";
  if (starts(0x28, 0xb5, 0x2f, 0xfd)) return "zstd";
  if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return "xz";
  if (starts(0x42, 0x5a, 0x68)) return "bzip2";
  return "none";
}

function decompress(kind: Compression, input: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  switch (kind) {
    case "none":
      return input;
    case "gzip":
      return viaTransform(input, zlib.createGunzip());
    case "zstd":
      if (typeof zlib.createZstdDecompress === "function")
        return viaTransform(input, zlib.createZstdDecompress());
      return viaProcess(input, "zstd", ["-dc"]);
    case "xz":
      return viaProcess(input, "xz", ["-dc"]);
    case "bzip2":
      return viaProcess(input, "bzip2", ["-dc"]);
  }
}

function viaTransform(input: AsyncIterable<Uint8Array>, t: Transform): AsyncIterable<Uint8Array> {
  const src = Readable.from(input);
  src.on("error", (e) => t.destroy(e));
  t.on("close", () => src.destroy());
  src.pipe(t);
  return t;
}

async function* viaProcess(
  input: AsyncIterable<Uint8Array>,
  cmd: string,
  args: string[],
): AsyncGenerator<Uint8Array> {
  if (!Bun.which(cmd)) {
    throw new LjError("unavailable", "decompressor-missing", `${cmd} is needed to decompress this archive`, {
      hint: `install ${cmd}`,
    });
  }
  const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
  const src = Readable.from(input);
  let inputError: unknown;
  src.on("error", (e) => {
    inputError = e;
    child.kill("SIGKILL");
  });
  child.stdin.on("error", () => {}); // EPIPE when the decompressor stops early; its exit code says why
  src.pipe(child.stdin);
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    if (stderr.length < 4096) stderr += d.toString();
  });
  const exited = new Promise<number | null>((res) => child.on("close", (code) => res(code)));
  let complete = false;
  try {
    for await (const chunk of child.stdout) yield chunk as Uint8Array;
    const code = await exited;
    if (inputError !== undefined) throw inputError;
    if (code !== 0)
      throw new ArchiveError("malformed", undefined, `${cmd} failed: ${stderr.trim() || `exit ${code}`}`);
    complete = true;
  } finally {
    if (!complete) {
      src.destroy();
      child.kill("SIGKILL");
    }
  }
}

async function* guardDecompressed(
  src: AsyncIterable<Uint8Array>,
  kind: Compression,
  counters: { compressed: number; decompressed: number },
  limits: ExtractLimits,
  signal: AbortSignal | undefined,
): AsyncGenerator<Uint8Array> {
  for await (const chunk of src) {
    signal?.throwIfAborted();
    counters.decompressed += chunk.byteLength;
    if (counters.decompressed > limits.maxTotalBytes) {
      throw new ArchiveError(
        "too-many-bytes",
        undefined,
        `more than ${limits.maxTotalBytes} bytes after decompression`,
      );
    }
    if (
      kind !== "none" &&
      counters.decompressed > limits.ratioGraceBytes &&
      counters.decompressed > limits.maxRatio * Math.max(counters.compressed, 1)
    ) {
      throw new ArchiveError(
        "compression-ratio",
        undefined,
        `decompresses more than ${limits.maxRatio}x (${counters.compressed} -> ${counters.decompressed}+ bytes)`,
      );
    }
    yield chunk;
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

async function lexists(p: string): Promise<boolean> {
  return fsp.lstat(p).then(
    () => true,
    () => false,
  );
}

function isErrno(e: unknown): e is NodeJS.ErrnoException {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === "string" && "syscall" in e;
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** JSON-quoted, with DEL, C1 controls and line separators escaped too (JSON leaves them raw). */
function showName(name: string): string {
  const s = JSON.stringify(name).replace(
    /[\x7f-\x9f\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  return s.length > 200 ? `${s.slice(0, 197)}..."` : s;
}
