/**
 * Log files with a bound: a file that would grow past `maxBytes` is rotated first (FILE ->
 * FILE.1 -> ... -> FILE.<keep>, the oldest dropped), so an app printing without pause costs
 * at most (keep + 1) x maxBytes of disk. Reading a log's tail reads from the end, a chunk at a
 * time, never the whole file.
 */
import {
  appendFileSync,
  closeSync,
  fstatSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
} from "node:fs";
import { LjError } from "../errors.ts";
import { paths } from "../store/paths.ts";

export interface LogRotation {
  /** A file is rotated before it would pass this size. */
  maxBytes: number;
  /** Rotated files kept (FILE.1 ... FILE.<keep>); 0 keeps none. */
  keep: number;
}

/** 16 MiB per file, 5 rotated files: at most 96 MiB per app log and for the access log. */
export const LOG_DEFAULTS = { maxMb: 16, keep: 5 } as const;

function setting(
  name: string,
  env: string | undefined,
  file: unknown,
  fallback: number,
  where: string,
  min: number,
): number {
  const raw = env ?? file;
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || (typeof raw === "string" && raw.trim() === "")) {
    throw new LjError("config", "bad-config", `${name} in ${where} must be a number >= ${min}, not ${raw}`);
  }
  return n;
}

/**
 * The rotation settings: LJ_LOG_MAX_MB / LJ_LOG_KEEP win over [logs] max_mb / keep in
 * $LIGHTJAIL_ROOT/config.toml; defaults LOG_DEFAULTS.
 */
export function logRotation(
  env: Record<string, string | undefined> = process.env,
  file = paths.config(),
): LogRotation {
  let logs: { max_mb?: unknown; keep?: unknown } = {};
  try {
    const doc = Bun.TOML.parse(readFileSync(file, "utf8")) as { logs?: typeof logs };
    logs = doc.logs ?? {};
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new LjError("config", "bad-config", `cannot parse ${file}: ${(e as Error).message}`);
    }
  }
  const where = (v: string | undefined) => (v !== undefined ? "the environment" : `[logs] of ${file}`);
  const maxMb = setting(
    "max_mb",
    env.LJ_LOG_MAX_MB,
    logs.max_mb,
    LOG_DEFAULTS.maxMb,
    where(env.LJ_LOG_MAX_MB),
    0.001,
  );
  const keep = setting("keep", env.LJ_LOG_KEEP, logs.keep, LOG_DEFAULTS.keep, where(env.LJ_LOG_KEEP), 0);
  return { maxBytes: Math.floor(maxMb * 1024 * 1024), keep: Math.floor(keep) };
}

const sizeOf = (file: string) => {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
};

/** Shifts FILE.<n> up by one (dropping the last) and FILE to FILE.1. */
export function rotate(file: string, keep: number): void {
  if (keep <= 0) {
    rmSync(file, { force: true });
    return;
  }
  rmSync(`${file}.${keep}`, { force: true });
  for (let n = keep - 1; n >= 1; n--) {
    try {
      renameSync(`${file}.${n}`, `${file}.${n + 1}`);
    } catch {}
  }
  try {
    renameSync(file, `${file}.1`);
  } catch {}
}

/**
 * Appends `text`, rotating whenever the file is full: a batch larger than the room left is
 * split at line ends, so no file passes `maxBytes` (a single longer line fills a file alone).
 */
export function appendRotating(file: string, text: string, r: LogRotation): void {
  let rest = Buffer.from(text);
  let size = sizeOf(file);
  while (rest.length > 0) {
    const room = r.maxBytes - size;
    let n = rest.length;
    if (n > room) {
      const cut = rest.lastIndexOf(10, room - 1);
      n = cut >= 0 && room > 0 ? cut + 1 : size === 0 ? Math.min(rest.length, r.maxBytes) : 0;
    }
    if (n === 0) {
      rotate(file, r.keep);
      size = 0;
      continue;
    }
    appendFileSync(file, rest.subarray(0, n), { mode: 0o600 });
    size += n;
    rest = rest.subarray(n);
  }
}

/** The whole rotated set of a log: FILE and FILE.1 ... (for removal). */
export function rotatedFiles(file: string, keep: number): string[] {
  return [file, ...Array.from({ length: Math.max(keep, 0) }, (_, i) => `${file}.${i + 1}`)];
}

/**
 * The last `lines` complete lines of a file, read backwards in chunks; at most `maxBytes`
 * are read however long the lines are.
 */
export function readTail(file: string, lines: number, maxBytes = 8 * 1024 * 1024): string[] {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch {
    return [];
  }
  try {
    const size = fstatSync(fd).size;
    const chunk = 64 * 1024;
    const parts: Buffer[] = [];
    let pos = size;
    let newlines = 0;
    while (pos > 0 && size - pos < maxBytes && newlines <= lines) {
      const len = Math.min(chunk, pos, maxBytes - (size - pos));
      pos -= len;
      const buf = Buffer.alloc(len);
      readSync(fd, buf, 0, len, pos);
      for (const b of buf) if (b === 10) newlines++;
      parts.unshift(buf);
    }
    let text = Buffer.concat(parts).toString("utf8");
    // A read that stopped mid-file starts mid-line: that partial first line is not a line.
    if (pos > 0) text = text.slice(text.indexOf("\n") + 1);
    return text.split("\n").filter(Boolean).slice(-lines);
  } finally {
    closeSync(fd);
  }
}
