/**
 * spawnJail: the TypeScript API over the shim. One call creates a jail and returns a handle
 * at once; the jail's setup runs in its own process, and its end arrives through the status
 * pipe, read asynchronously, so one Bun process can keep hundreds of jails running.
 */
import { chownSync, closeSync, mkdirSync, writeSync } from "node:fs";
import { rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { FileSink } from "bun";
import { LjError } from "../errors.ts";
import { paths } from "../store/paths.ts";
import { cgroupDirsFor, joinCgroups, newJailId, oomKilled, removeCgroups } from "./cgroup.ts";
import { shimReap, shimSpawn } from "./ffi.ts";
import { attachNet, type JailNet, releaseNet, reserveNet } from "./net.ts";
import {
  type CgroupDir,
  encodeSpec,
  freebsdJailName,
  type JailPayload,
  type JailSpec,
  payloadMessage,
  STDIO_NULL,
  STDIO_PIPE,
  type StdioMode,
  validatePayload,
  validateSpec,
} from "./spec.ts";

export type EndReason = "exit" | "signal" | "oom" | "timeout" | "setup";

export interface JailResult {
  id: string;
  /** Exit code, when the payload exited by itself. */
  exitCode: number | null;
  /** Signal number that ended the payload (or the whole jail). */
  signal: number | null;
  reason: EndReason;
  /** What a shell would report: the exit code, or 128 + signal; 125 for a jail that never started. */
  status: number;
  /** Why the jail could not be set up, naming the failing step and path. */
  error?: string;
  durationMs: number;
  /** With `spec.trace`: how long each step took, in order; they add up to `durationMs`. */
  trace?: TraceStep[];
}

export interface TraceStep {
  /** What had just been done when the step ended ("/proc", "payload ran", ...). */
  step: string;
  ms: number;
}

export interface Jail {
  id: string;
  /** Host pid of the jail's pid 1 (the keeper). */
  pid: number;
  /** The jail's private address (net "private"), reachable from the host. */
  address?: string;
  stdin: JailStdin | null;
  stdout: ReadableStream<Uint8Array> | null;
  stderr: ReadableStream<Uint8Array> | null;
  exited: Promise<JailResult>;
  /**
   * Settles once the jail is gone for good: its first process reaped, its cgroups removed.
   * `exited` does not wait for this (the kernel tears a namespace down after the payload's
   * end is already known); leak checks and shutdown do.
   */
  closed: Promise<void>;
  /**
   * Releases a jail spawned with `hold` (after wiring its network, say). With a payload, the
   * jail runs that instead of the spec's argv (how a JailPool's pre-made jails are used).
   */
  start(payload?: JailPayload): void;
  /** SIGKILL destroys the whole jail; other signals go to the payload. */
  kill(signal?: NodeJS.Signals | number): void;
}

export interface SpawnOptions {
  /** Keep the payload waiting until `start()` (the owner wires the jail first). */
  hold?: boolean;
}

export const SETUP_FAILED_STATUS = 125;

let stageReady: string | undefined;
function stageDir(): string {
  const dir = paths.stage();
  if (stageReady !== dir) {
    // Searchable (not listable) by others: a user-namespaced jail's root mounts on it.
    mkdirSync(dir, { recursive: true, mode: 0o711 });
    stageReady = dir;
  }
  return dir;
}

function stdioFd(mode: StdioMode, i: number): number {
  if (mode === "inherit") return i;
  if (mode === "pipe") return STDIO_PIPE;
  if (mode === "ignore") return STDIO_NULL;
  if (Number.isInteger(mode) && mode >= 0) return mode;
  throw new LjError("usage", "invalid-spec", `invalid stdio setting ${String(mode)}`);
}

const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGUSR2: 12,
  SIGTERM: 15,
  SIGCONT: 18,
  SIGWINCH: 28,
};

export function signalNumber(sig: NodeJS.Signals | number): number {
  if (typeof sig === "number") return sig;
  const n = SIGNALS[sig];
  if (n === undefined) throw new LjError("usage", "bad-signal", `unsupported signal ${sig}`);
  return n;
}

interface StatusReport {
  /** The jail could not be set up (an "E" line before the end). */
  error?: { errno: number; text: string };
  /** Cleanup after the end left something behind (FreeBSD: an "E" line after X/S). */
  teardownError?: string;
  exitCode?: number;
  signal?: number;
  /** Traced jails: each step's name and its CLOCK_MONOTONIC time in nanoseconds. */
  marks: [string, number][];
}

export function parseStatus(text: string): StatusReport {
  const r: StatusReport = { marks: [] };
  for (const line of text.split("\n")) {
    if (line.length < 2) continue;
    const rest = line.slice(2);
    if (line[0] === "T") {
      const sp = rest.lastIndexOf(" ");
      r.marks.push([rest.slice(0, sp), Number(rest.slice(sp + 1))]);
      continue;
    }
    const ended = r.exitCode !== undefined || r.signal !== undefined;
    if (line[0] === "E") {
      const sp = rest.indexOf(" ");
      const e = { errno: Number(rest.slice(0, sp)), text: rest.slice(sp + 1) };
      if (ended) r.teardownError ??= e.text;
      else r.error ??= e;
    } else if (line[0] === "X") r.exitCode = Number(rest);
    else if (line[0] === "S") r.signal = Number(rest);
  }
  return r;
}

const statusDecoder = new TextDecoder();

/** Reads the status pipe to EOF, calling `onEnd` as soon as an exit or signal line is in. */
async function readStatus(fd: number, onEnd: (text: string) => void): Promise<string> {
  let text = "";
  let told = false;
  for await (const chunk of Bun.file(fd).stream()) {
    text += statusDecoder.decode(chunk, { stream: true });
    if (!told && /^[XS] \d+\n/m.test(text)) {
      told = true;
      onEnd(text);
    }
  }
  return text;
}

async function reapJail(pid: number): Promise<number | null> {
  // The status pipe closes as the keeper exits; it becomes reapable a moment later.
  for (let delay = 0; ; delay = Math.min(delay * 2 || 1, 50)) {
    try {
      const st = shimReap(pid, true);
      if (st !== null) return st;
    } catch {
      return null; // someone else reaped it (ECHILD): the status pipe still told us the end
    }
    await Bun.sleep(delay);
  }
}

/** The jail's stdin. `end()` flushes and closes it, so the payload reads EOF. */
export interface JailStdin {
  write(data: Parameters<FileSink["write"]>[0]): number | Promise<number>;
  flush(): number | Promise<number>;
  end(): Promise<void>;
}

function stdinWriter(fd: number): JailStdin {
  const sink = Bun.file(fd).writer();
  let closed = false;
  return {
    write: (data) => sink.write(data),
    flush: () => sink.flush(),
    async end() {
      if (closed) return;
      closed = true;
      await sink.end();
      // Bun does not close a descriptor it did not open: without this, no EOF.
      try {
        closeSync(fd);
      } catch {}
    },
  };
}

/**
 * A traced jail's timeline: the owner's work until the shim's first mark, each step between
 * marks (timed on the jail's side), and the owner noticing the end after the last one.
 */
function traceSteps(marks: [string, number][], ownerMs: number, totalMs: number): TraceStep[] | undefined {
  if (marks.length === 0) return undefined;
  const steps: TraceStep[] = [{ step: "owner, spawn call", ms: ownerMs }];
  for (let i = 1; i < marks.length; i++) {
    steps.push({ step: marks[i]![0], ms: (marks[i]![1] - marks[i - 1]![1]) / 1e6 });
  }
  const jailMs = (marks[marks.length - 1]![1] - marks[0]![1]) / 1e6;
  steps.push({ step: "owner noticed the end", ms: totalMs - ownerMs - jailMs });
  return steps;
}

/** How a jail ended, from its status lines and what its owner saw. */
function resultOf(
  report: StatusReport,
  seen: {
    id: string;
    durationMs: number;
    wait: number | null;
    oom: boolean;
    timedOut: boolean;
    prepFailure?: string;
    ownerMs: number;
  },
): JailResult {
  const trace = traceSteps(report.marks, seen.ownerMs, seen.durationMs);
  const base = { id: seen.id, durationMs: seen.durationMs, ...(trace ? { trace } : {}) };
  if (report.error || seen.prepFailure) {
    const error = report.error?.text ?? seen.prepFailure;
    return { ...base, exitCode: null, signal: null, reason: "setup", status: SETUP_FAILED_STATUS, error };
  }
  let signal = report.signal ?? null;
  const exitCode = report.exitCode ?? null;
  if (exitCode === null && signal === null) {
    // The keeper itself was killed (timeout, kill(), or the OOM killer): take its wait status.
    signal = seen.wait !== null && (seen.wait & 0x7f) !== 0 ? seen.wait & 0x7f : 9;
  }
  const reason: EndReason = seen.timedOut
    ? "timeout"
    : seen.oom
      ? "oom"
      : signal !== null
        ? "signal"
        : "exit";
  const status = signal !== null ? 128 + signal : (exitCode ?? 0);
  return { ...base, exitCode: signal !== null ? null : exitCode, signal, reason, status };
}

/** Creates the upper layer and its overlayfs work directory (a sibling), owned by the jail. */
function prepareUpper(spec: JailSpec): string | undefined {
  if (!spec.upper) return undefined;
  const work = join(dirname(spec.upper), `.${basename(spec.upper)}.work`);
  mkdirSync(spec.upper, { recursive: true });
  mkdirSync(work, { recursive: true });
  if (spec.userns) {
    // The namespace's root writes these: hand them to the uid it is on the host.
    const m = typeof spec.userns === "object" ? spec.userns : {};
    const uid = m.uidBase ?? 100000;
    for (const d of [spec.upper, work]) chownSync(d, uid, m.gidBase ?? uid);
  }
  return work;
}

/** A jail made with the seccomp filter waits with it installed: its payload cannot drop it. */
export function checkPayloadFilter(spec: JailSpec, payload: JailPayload): void {
  if (payload.seccomp === false && spec.seccomp !== false) {
    throw new LjError(
      "usage",
      "invalid-payload",
      "this jail was made with the seccomp filter; its payload cannot turn it off",
      {
        hint: "make the jail (or the pool's template) with seccomp: false",
      },
    );
  }
}

export function spawnJail(spec: JailSpec, opts: SpawnOptions = {}): Jail {
  validateSpec(spec);
  const started = performance.now();
  const id = newJailId();
  // Network (net "private" only): the address is leased before the jail exists, so a spawn
  // that cannot get one fails here and leaves nothing behind. none/host do no extra work.
  const net: JailNet | null = spec.net === "private" ? reserveNet(spec, id) : null;
  const stdio = (spec.stdio ?? ["ignore", "inherit", "inherit"]).map(stdioFd) as [number, number, number];
  const cgroups: CgroupDir[] = cgroupDirsFor(id, spec.limits);
  const work = prepareUpper(spec);
  // FreeBSD has no mount namespaces: each jail assembles its root on a stage of its own, and
  // jail names may not contain dots.
  const freebsd = process.platform === "freebsd";
  const stage = freebsd ? join(stageDir(), id) : stageDir();
  if (freebsd) mkdirSync(stage, { mode: 0o700 });
  const encoded = encodeSpec(freebsd && !spec.name ? { ...spec, name: freebsdJailName(id) } : spec, {
    stage,
    work,
    // The jail places itself (its placer works while it builds its root); a user-namespaced
    // jail has no rights over the host's cgroups, so its owner places it.
    cgroups: spec.userns ? [] : cgroups,
    stdio,
    newSession: spec.newSession ?? (spec.stdio?.[0] ?? "ignore") !== "inherit",
  });
  let fds: ReturnType<typeof shimSpawn>;
  const ownerMs = performance.now() - started;
  try {
    fds = shimSpawn(encoded);
  } catch (e) {
    if (net) void releaseNet(net);
    throw e;
  }

  let syncFd = fds.syncFd;
  let timedOut = false;
  let prepFailure: string | undefined;
  let attached: Promise<void> | null = null;
  let alive = true;
  let payload: Uint8Array | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const release = (go: boolean) => {
    if (syncFd < 0) return;
    try {
      if (go && payload) writeSync(syncFd, payload);
      else if (go) writeSync(syncFd, "g");
    } catch {
      // The jail died during setup; its status pipe says why.
    }
    closeSync(syncFd);
    syncFd = -1;
    // The timeout counts the payload's time, not the jail's setup (or its wait in a pool).
    if (go && spec.timeoutMs) {
      timer = setTimeout(() => {
        timedOut = true;
        kill("SIGKILL");
      }, spec.timeoutMs);
    }
  };
  let killedByOwner = false;
  const kill = (signal: NodeJS.Signals | number = "SIGKILL") => {
    if (!alive) return;
    if (signalNumber(signal) === 9) killedByOwner = true;
    try {
      process.kill(fds.pid, signalNumber(signal));
    } catch {}
  };

  // The whole status text arrives at EOF; on Linux the end of the payload is known a little
  // earlier, from its "X"/"S" line (the keeper still has to exit and the kernel to tear the
  // namespaces down before EOF). FreeBSD reports after its teardown, so it waits for EOF.
  let endLine: (text: string) => void = () => {};
  const ended = new Promise<string>((resolve) => {
    endLine = resolve;
  });
  const statusText = readStatus(fds.statusFd, process.platform === "linux" ? endLine : () => {});
  statusText.then(endLine);
  const reaped = statusText.then(async () => {
    closeSync(fds.statusFd);
    release(false);
    const wait = await reapJail(fds.pid);
    alive = false;
    return wait;
  });
  const closed = reaped.then(async () => {
    if (net) {
      await attached?.catch(() => {});
      await releaseNet(net); // veth, route, filter and NAT elements, lease
    }
    await removeCgroups(cgroups);
    if (work) await rm(work, { recursive: true, force: true });
    if (freebsd) await rm(stage, { recursive: true, force: true });
  });

  const exited = (async (): Promise<JailResult> => {
    const report = parseStatus(await ended);
    if (timer) clearTimeout(timer);
    const keeperKilled = report.exitCode === undefined && report.signal === undefined && !report.error;
    // Only a jail whose keeper was killed needs its wait status to tell how it ended.
    const wait = keeperKilled ? await reaped : null;
    // A payload that exited 0 succeeded, whatever its children met. Otherwise ask the memory
    // cgroup; the kernel counts an OOM kill just after it sends the SIGKILL, so a killed jail
    // is checked once more after it is reaped, when the killer has certainly finished.
    const sigkilled = !killedByOwner && (report.signal === 9 || keeperKilled);
    const succeeded = report.exitCode === 0 && !report.error;
    let oom = cgroups.length > 0 && !succeeded && oomKilled(cgroups);
    if (!oom && cgroups.length > 0 && sigkilled) {
      await reaped;
      oom = oomKilled(cgroups, true);
    }
    return resultOf(report, {
      id,
      durationMs: performance.now() - started,
      wait,
      oom,
      timedOut,
      prepFailure,
      ownerMs,
    });
  })();

  // While the jail sets itself up, the owner wires its network (net "private") and places a
  // user-namespaced jail in its cgroups, off the event loop; then it lets the payload go, at
  // once or when the caller's start() asks. A failure kills the jail, which then reports a
  // setup error naming the step.
  let wanted = !opts.hold;
  const ownerPlaces = spec.userns ? cgroups : [];
  let wired = !net && ownerPlaces.length === 0;
  const fail = (what: string) => (e: Error) => {
    prepFailure ??= `${what}: ${e.message}`;
    kill("SIGKILL");
    throw e;
  };
  attached = net ? attachNet(net, fds.pid).catch(fail("network")) : null;
  const placed =
    ownerPlaces.length > 0
      ? joinCgroups(ownerPlaces, spec.limits ?? {}, fds.pid).catch(fail("cgroups"))
      : null;
  if (!wired) {
    Promise.all([attached, placed]).then(
      () => {
        wired = true;
        if (wanted) release(true);
      },
      () => {},
    );
  }
  let startCalled = false;
  const start = (what?: JailPayload) => {
    if (startCalled) return;
    startCalled = true;
    if (what) {
      validatePayload(what);
      checkPayloadFilter(spec, what);
      payload = payloadMessage(what);
    }
    wanted = true;
    if (wired) release(true);
  };
  if (!opts.hold) start();

  return {
    id,
    pid: fds.pid,
    ...(net ? { address: net.address } : {}),
    stdin: fds.stdinFd >= 0 ? stdinWriter(fds.stdinFd) : null,
    stdout: fds.stdoutFd >= 0 ? Bun.file(fds.stdoutFd).stream() : null,
    stderr: fds.stderrFd >= 0 ? Bun.file(fds.stderrFd).stream() : null,
    exited,
    closed,
    start,
    kill,
  };
}

/** Runs a jail to completion, collecting its output. */
export async function runJail(spec: JailSpec): Promise<JailResult & { stdout: string; stderr: string }> {
  const jail = spawnJail({ ...spec, stdio: [spec.stdio?.[0] ?? "ignore", "pipe", "pipe"] });
  const [stdout, stderr, result] = await Promise.all([
    jail.stdout ? new Response(jail.stdout).text() : "",
    jail.stderr ? new Response(jail.stderr).text() : "",
    jail.exited,
  ]);
  return { ...result, stdout, stderr };
}
