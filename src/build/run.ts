/**
 * Runs a build jail with its output streamed line by line to a log callback and a log file,
 * with a heartbeat so a quiet step (a large download) still shows progress.
 *
 * A build's output is the tenant's to choose, so what it costs the platform is capped: lines
 * longer than MAX_LINE are cut, and after the first HEAD_BYTES only the last TAIL_LINES lines
 * are kept (in memory, as a ring), written after a line saying how much was left out. The
 * log file, the deploy log in the database and the server's memory stay bounded however much
 * a build prints.
 */
import { createWriteStream } from "node:fs";
import { type JailResult, spawnJail } from "../jail/spawn.ts";
import type { JailSpec } from "../jail/spec.ts";
import { pumpLines } from "../lines.ts";
import type { BuildLog } from "./types.ts";

export interface StreamedRun {
  result: JailResult;
  tail: string[];
  lines: number;
  /** Lines of output left out of the log (between the head and the tail). */
  elided: number;
}

export const OUTPUT_CAP = { headBytes: 1024 * 1024, tailLines: 500, maxLine: 4096 };

/** Keeps the head of a stream of lines and a ring of its tail; says what fell between. */
export class BoundedLog {
  private bytes = 0;
  private ring: string[] = [];
  elided = 0;
  elidedBytes = 0;

  constructor(
    private readonly write: (line: string) => void,
    private readonly cap = OUTPUT_CAP,
  ) {}

  push(raw: string): void {
    const line =
      raw.length > this.cap.maxLine
        ? `${raw.slice(0, this.cap.maxLine)} [... ${raw.length - this.cap.maxLine} more characters]`
        : raw;
    if (this.bytes < this.cap.headBytes) {
      this.bytes += line.length + 1;
      this.write(line);
      return;
    }
    this.ring.push(line);
    if (this.ring.length > this.cap.tailLines) {
      const dropped = this.ring.shift() ?? "";
      this.elided++;
      this.elidedBytes += dropped.length + 1;
    }
  }

  /** Writes the kept tail, after a line saying what was left out. */
  end(): void {
    if (this.elided > 0) {
      this.write(
        `[lj: ${this.elided} lines (${this.elidedBytes} bytes) of output left out; the first ${this.cap.headBytes} bytes and the last ${this.ring.length} lines are kept]`,
      );
    }
    for (const l of this.ring) this.write(l);
    this.ring = [];
  }
}

export async function runStreamed(
  spec: JailSpec,
  opts: { log?: BuildLog; logFile: string; label: string; heartbeatMs?: number },
): Promise<StreamedRun> {
  const file = createWriteStream(opts.logFile, { flags: "a" });
  const started = performance.now();
  const tail: string[] = [];
  let lines = 0;
  const elapsed = () => {
    const s = Math.round((performance.now() - started) / 1000);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  };
  const out = new BoundedLog((line) => {
    file.write(`${line}\n`);
    opts.log?.(`[${opts.label} ${elapsed()}] ${line}`);
  });
  const emit = (line: string) => {
    lines++;
    tail.push(line.length > OUTPUT_CAP.maxLine ? line.slice(0, OUTPUT_CAP.maxLine) : line);
    if (tail.length > 30) tail.shift();
    out.push(line);
  };
  const jail = spawnJail({ ...spec, stdio: ["ignore", "pipe", "pipe"] });
  const beat = setInterval(
    () => opts.log?.(`[${opts.label} ${elapsed()}] ... still running (${lines} lines of output so far)`),
    opts.heartbeatMs ?? 15000,
  );
  try {
    const [, , result] = await Promise.all([
      // A line without an end is cut where it reaches the cap, so it never grows unbounded.
      pumpLines(jail.stdout, emit, OUTPUT_CAP.maxLine),
      pumpLines(jail.stderr, emit, OUTPUT_CAP.maxLine),
      jail.exited,
    ]);
    await jail.closed;
    if (result.error) emit(`jail setup failed: ${result.error}`);
    out.end();
    return { result, tail, lines, elided: out.elided };
  } finally {
    clearInterval(beat);
    await new Promise<void>((r) => file.end(r));
  }
}

/** Interpreter argv for a script: its #! line, else /bin/sh -e. */
export function scriptArgv(text: string, path: string): string[] {
  const first = text.split("\n", 1)[0] ?? "";
  if (first.startsWith("#!")) {
    const parts = first.slice(2).trim().split(/\s+/).filter(Boolean);
    if (parts.length > 0) return [...parts, path];
  }
  return ["/bin/sh", "-e", path];
}
