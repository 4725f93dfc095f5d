/**
 * Runs a build jail with its output streamed line by line to a log callback and a log file,
 * with a heartbeat so a quiet step (a large download) still shows progress.
 */
import { createWriteStream } from "node:fs";
import { type JailResult, spawnJail } from "../jail/spawn.ts";
import type { JailSpec } from "../jail/spec.ts";
import type { BuildLog } from "./types.ts";

export interface StreamedRun {
  result: JailResult;
  tail: string[];
  lines: number;
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
  const emit = (line: string) => {
    lines++;
    tail.push(line);
    if (tail.length > 30) tail.shift();
    file.write(`${line}\n`);
    opts.log?.(`[${opts.label} ${elapsed()}] ${line}`);
  };
  const jail = spawnJail({ ...spec, stdio: ["ignore", "pipe", "pipe"] });
  const beat = setInterval(
    () => opts.log?.(`[${opts.label} ${elapsed()}] ... still running (${lines} lines of output so far)`),
    opts.heartbeatMs ?? 15000,
  );
  const pump = async (s: ReadableStream<Uint8Array> | null) => {
    if (!s) return;
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of s) {
      buf += dec.decode(chunk, { stream: true });
      let i = buf.indexOf("\n");
      while (i >= 0) {
        emit(buf.slice(0, i).replace(/\r$/, ""));
        buf = buf.slice(i + 1);
        i = buf.indexOf("\n");
      }
    }
    if (buf.length > 0) emit(buf);
  };
  try {
    const [, , result] = await Promise.all([pump(jail.stdout), pump(jail.stderr), jail.exited]);
    await jail.closed;
    if (result.error) emit(`jail setup failed: ${result.error}`);
    return { result, tail, lines };
  } finally {
    clearInterval(beat);
    await new Promise<void>((r) => file.end(r));
  }
}

export const BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Interpreter argv for a script: its #! line, else /bin/sh -e. */
export function scriptArgv(text: string, path: string): string[] {
  const first = text.split("\n", 1)[0] ?? "";
  if (first.startsWith("#!")) {
    const parts = first.slice(2).trim().split(/\s+/).filter(Boolean);
    if (parts.length > 0) return [...parts, path];
  }
  return ["/bin/sh", "-e", path];
}
