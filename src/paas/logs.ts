/**
 * App logs: every line an app's processes (and the router, and the platform) write, kept in a
 * ring per app for `lj logs`, appended to a file per app (rotated by size: src/paas/rotate.ts),
 * and pushed to live followers.
 */
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { appendRotating, type LogRotation, logRotation, readTail, rotatedFiles } from "./rotate.ts";

export interface LogLine {
  time: string;
  /** "web.1", "router", "lj" ... */
  source: string;
  line: string;
}

const RING = 2000;

export function formatLogLine(l: LogLine): string {
  return `${l.time} ${l.source}: ${l.line}`;
}

export class LogHub {
  private rings = new Map<string, LogLine[]>();
  private followers = new Map<string, Set<(l: LogLine) => void>>();
  /** File writes are batched: a chatty app (or the router's access lines) must not block the loop. */
  private pending = new Map<string, string[]>();
  private flushTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly dir: string,
    readonly rotation: LogRotation = logRotation(),
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private file(app: string): string {
    return join(this.dir, `${app}.log`);
  }

  write(app: string, source: string, line: string): void {
    const l: LogLine = { time: new Date().toISOString(), source, line };
    let ring = this.rings.get(app);
    if (!ring) {
      ring = this.loadTail(app);
      this.rings.set(app, ring);
    }
    ring.push(l);
    if (ring.length > RING) ring.splice(0, ring.length - RING);
    let p = this.pending.get(app);
    if (!p) {
      p = [];
      this.pending.set(app, p);
    }
    p.push(`${formatLogLine(l)}\n`);
    this.flushTimer ??= setTimeout(() => this.flush(), 200);
    for (const f of this.followers.get(app) ?? []) f(l);
  }

  flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    for (const [app, lines] of this.pending) {
      try {
        appendRotating(this.file(app), lines.join(""), this.rotation);
      } catch {
        // A full disk must not take the app down; the ring still has the lines.
      }
    }
    this.pending.clear();
  }

  /** Earlier runs' lines come back from the file, so logs survive a server restart. */
  private loadTail(app: string): LogLine[] {
    return readTail(this.file(app), RING).map((s) => {
      const sp = s.indexOf(" ");
      const rest = s.slice(sp + 1);
      const colon = rest.indexOf(": ");
      return { time: s.slice(0, sp), source: rest.slice(0, colon), line: rest.slice(colon + 2) };
    });
  }

  tail(app: string, n: number): LogLine[] {
    let ring = this.rings.get(app);
    if (!ring) {
      ring = this.loadTail(app);
      this.rings.set(app, ring);
    }
    return ring.slice(-n);
  }

  follow(app: string, fn: (l: LogLine) => void): () => void {
    let set = this.followers.get(app);
    if (!set) {
      set = new Set();
      this.followers.set(app, set);
    }
    set.add(fn);
    return () => set.delete(fn);
  }

  /** Drops the app's ring and its log files (the app is gone). */
  forget(app: string): void {
    this.rings.delete(app);
    this.pending.delete(app);
    for (const f of rotatedFiles(this.file(app), this.rotation.keep)) rmSync(f, { force: true });
  }
}
