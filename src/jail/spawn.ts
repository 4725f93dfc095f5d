/**
 * spawnJail: the TypeScript API over the shim. One call creates a jail and returns a handle
 * at once; the jail's setup runs in its own process, and its end arrives through the status
 * pipe, read asynchronously, so one Bun process can keep hundreds of jails running.
 */
import { chmodSync, chownSync, closeSync, mkdirSync, realpathSync, statSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { FileSink } from "bun";
import { LjError } from "../errors.ts";
import { paths } from "../store/paths.ts";
import { cgroupDirsFor, joinCgroups } from "./cgroup.ts";
import { releaseCgroups, type StockCgroups, takeStockCgroups } from "./cgroup-stock.ts";
import { oomKilled } from "./cgroup-usage.ts";
import { shimReap, shimSpawn } from "./ffi.ts";
import { attachNet, type JailNet, releaseNet, reserveNet, unwireNet } from "./net.ts";
import { knownRoots } from "./net-registry.ts";
import { newJailId } from "./owner.ts";
import { platformNumbers, type SignalName } from "./platform.ts";
import { removeScratch } from "./scratch.ts";
import {
  type CgroupDir,
  CgroupKind,
  encodeSpec,
  freebsdJailName,
  type JailPayload,
  type JailSpec,
  MAX_HIDDEN,
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
  /**
   * The jail's cgroup directories (none without limits). Their names are not the jail's id:
   * cgroups are used again by later jails.
   */
  cgroups: readonly string[];
  stdin: JailStdin | null;
  stdout: ReadableStream<Uint8Array> | null;
  stderr: ReadableStream<Uint8Array> | null;
  exited: Promise<JailResult>;
  /**
   * Settles once the jail is gone for good: its first process reaped, its cgroups removed (or
   * back in the owner's stock for a later jail).
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

let hiddenFor: { root: string; known: string[]; paths: string[] } | undefined;
/**
 * lightjail's state roots, under both spellings: every jail masks them wherever its tree would
 * show them (zig/src/hide.zig). A host world binds the host's /usr, and the default root is
 * /usr/local/lj: without the mask every jail could read the token, the database and the slugs.
 * Its own root first, then the other roots the machine's registry knows.
 */
function hiddenPaths(): string[] {
  const root = paths.root();
  const known = process.platform === "linux" ? knownRoots() : [];
  if (hiddenFor?.root !== root || hiddenFor.known !== known) {
    const roots = [root, ...known];
    const all = new Set<string>();
    for (const r of roots) {
      all.add(r);
      try {
        all.add(realpathSync(r));
      } catch {}
    }
    hiddenFor = { root, known, paths: [...all].slice(0, MAX_HIDDEN) };
  }
  return hiddenFor.paths;
}

function stdioFd(mode: StdioMode, i: number): number {
  if (mode === "inherit") return i;
  if (mode === "pipe") return STDIO_PIPE;
  if (mode === "ignore") return STDIO_NULL;
  if (Number.isInteger(mode) && mode >= 0) return mode;
  throw new LjError("usage", "invalid-spec", `invalid stdio setting ${String(mode)}`);
}

/** A signal's number on this platform (a number is taken as it is). */
export function signalNumber(sig: NodeJS.Signals | number, platform: string = process.platform): number {
  if (typeof sig === "number") return sig;
  const n = platformNumbers(platform).signals[sig as SignalName];
  if (n === undefined) throw new LjError("usage", "bad-signal", `unsupported signal ${sig}`);
  return n;
}

/**
 * What `kill(sig)` sends the jail's first process: the signal itself, except SIGKILL, which
 * ends the whole jail. On Linux that is SIGKILL to the keeper; on FreeBSD the supervisor's
 * destroy request, so its teardown still runs (mounts, aliases, RCTL rules).
 */
export function ownerSignal(sig: NodeJS.Signals | number, platform: string = process.platform): number {
  const n = signalNumber(sig, platform);
  return n === platformNumbers(platform).signals.SIGKILL ? platformNumbers(platform).destroy : n;
}

export interface StatusReport {
  /** The jail could not be set up (an "E" line before the end). */
  error?: { errno: number; text: string };
  /** Cleanup left something behind (FreeBSD: an "E errno teardown: ..." line). */
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
      // After a setup error too: the supervisor's teardown line names itself.
      if (ended || (r.error && e.text.startsWith("teardown: "))) r.teardownError ??= e.text;
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
  if (spec.userns) searchableRoot();
  if (!spec.upper) return undefined;
  const work = join(dirname(spec.upper), `.${basename(spec.upper)}.work`);
  // A layered mount's overlay needs a work directory of its own beside the root's (the shim
  // names it WORK-mINDEX, INDEX its place among the spec's mounts).
  const works = [work, ...(spec.mounts ?? []).flatMap((m, i) => (m.layered ? [`${work}-m${i}`] : []))];
  mkdirSync(spec.upper, { recursive: true });
  for (const w of works) mkdirSync(w, { recursive: true });
  if (spec.userns) {
    // The namespace's root writes these: hand them to the uid it is on the host.
    const m = typeof spec.userns === "object" ? spec.userns : {};
    const uid = m.uidBase ?? 100000;
    for (const d of [spec.upper, ...works]) chownSync(d, uid, m.gidBase ?? uid);
  }
  return work;
}

/**
 * A directory an unprivileged host uid must cross: made searchable (not listable) by others.
 * A user-namespaced jail's setup runs as such a uid and mounts on run/stage.
 */
export function ensureSearchable(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  const mode = statSync(dir).mode & 0o7777;
  if ((mode & 0o011) !== 0o011) chmodSync(dir, mode | 0o011);
}

function searchableRoot(): void {
  for (const d of [paths.root(), paths.run()]) ensureSearchable(d);
}

/** A jail made with the seccomp filter waits with it installed: its payload cannot drop it. */
function checkPayloadFilter(spec: JailSpec, payload: JailPayload): void {
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

const joinOnly = (d: CgroupDir): CgroupDir => ({ kind: CgroupKind.join, dir: d.dir });

/** What the owner decides and prepares before the shim makes the jail. */
interface Prepared {
  id: string;
  started: number;
  /** The owner's share of the spawn before the shim's call (traces start there). */
  ownerMs: number;
  net: JailNet | null;
  cgroups: CgroupDir[];
  work: string | undefined;
  /** FreeBSD: the jail's own stage directory, removed at the end. */
  freebsdStage: string | undefined;
  encoded: Uint8Array;
}

function prepare(spec: JailSpec, hold: boolean): Prepared {
  validateSpec(spec);
  const started = performance.now();
  // Cgroups made ahead of time; a user-namespaced jail is placed by its owner.
  const made = spec.userns ? null : takeStockCgroups(spec.limits);
  try {
    return prepareWithCgroups(spec, started, made, hold);
  } catch (e) {
    if (made) void releaseCgroups(made.dirs, spec.limits).catch(() => {});
    throw e;
  }
}

function prepareWithCgroups(
  spec: JailSpec,
  started: number,
  made: StockCgroups | null,
  hold: boolean,
): Prepared {
  const id = made?.id ?? newJailId();
  // Network (net "private" only): the address is leased before the jail exists, so a spawn
  // that cannot get one fails here and leaves nothing behind. none/host do no extra work.
  const net: JailNet | null = spec.net === "private" ? reserveNet(spec, id) : null;
  try {
    return prepareWithNet(spec, started, made, hold, id, net);
  } catch (e) {
    if (net) void releaseNet(net);
    throw e;
  }
}

function prepareWithNet(
  spec: JailSpec,
  started: number,
  made: StockCgroups | null,
  hold: boolean,
  id: string,
  net: JailNet | null,
): Prepared {
  const stdio = (spec.stdio ?? ["ignore", "inherit", "inherit"]).map(stdioFd) as [number, number, number];
  const cgroups: CgroupDir[] = made?.dirs ?? cgroupDirsFor(id, spec.limits);
  const work = prepareUpper(spec);
  // FreeBSD has no mount namespaces: each jail assembles its root on a stage of its own, and
  // jail names may not contain dots.
  const freebsd = process.platform === "freebsd";
  const stage = freebsd ? join(stageDir(), id) : stageDir();
  if (freebsd) mkdirSync(stage, { mode: 0o700 });
  // The jail places itself: it joins cgroups made ahead at once, or its placer makes them while
  // it builds its root. A user-namespaced jail has no rights over the host's cgroups, so its
  // owner places it.
  const encoded = encodeSpec(freebsd && !spec.name ? { ...spec, name: freebsdJailName(id) } : spec, {
    stage,
    work,
    cgroups: spec.userns ? [] : made ? made.dirs.map(joinOnly) : cgroups,
    stdio,
    hide: hiddenPaths(),
    newSession: spec.newSession ?? (spec.stdio?.[0] ?? "ignore") !== "inherit",
    // The child wires its own address; with its filter elements already in (net.ready), no
    // cgroups to place and no start to wait for, the go needs no owner.
    go: !hold && (!net || net.ready) && !spec.userns,
    net: net && !net.ownerWires ? net.wire : undefined,
  });
  const ownerMs = performance.now() - started;
  return {
    id,
    started,
    ownerMs,
    net,
    cgroups,
    work,
    freebsdStage: freebsd ? stage : undefined,
    encoded,
  };
}

export function spawnJail(spec: JailSpec, opts: SpawnOptions = {}): Jail {
  const prep = prepare(spec, opts.hold ?? false);
  let fds: ReturnType<typeof shimSpawn>;
  try {
    fds = shimSpawn(prep.encoded);
  } catch (e) {
    if (prep.net) void releaseNet(prep.net);
    void releaseCgroups(prep.cgroups, spec.limits).catch(() => {});
    throw e;
  }
  return new RunningJail(spec, prep, fds, opts);
}

/**
 * A jail from its spawn to its end: the go (or the payload) on the sync pipe, the end from the
 * status pipe, the result, and the cleanup of what the owner made for it.
 */
class RunningJail implements Jail {
  readonly id: string;
  readonly pid: number;
  readonly address?: string;
  readonly cgroups: readonly string[];
  readonly stdin: JailStdin | null;
  readonly stdout: ReadableStream<Uint8Array> | null;
  readonly stderr: ReadableStream<Uint8Array> | null;
  readonly exited: Promise<JailResult>;
  readonly closed: Promise<void>;

  /** The owner's end of the sync pipe (-1: the shim let the jail go at once, or released). */
  private syncFd: number;
  /** The payload has been let go, or given up on. */
  private released = false;
  private alive = true;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timedOut = false;
  private killedByOwner = false;
  /** Why the owner's own part of the setup (network, cgroups) failed. */
  private prepFailure: string | undefined;
  /** A pre-made jail's payload, sent instead of the go byte. */
  private payload: Uint8Array | undefined;
  /** The caller wants the payload to run (at once, or since start()). */
  private started = false;
  /** The owner's wiring (network, cgroups of a user-namespaced jail) is done. */
  private wired: boolean;
  private attached: Promise<void> | null = null;
  /** The status report, once the jail has ended. */
  private ends: StatusReport | undefined;

  constructor(
    private readonly spec: JailSpec,
    private readonly prep: Prepared,
    fds: ReturnType<typeof shimSpawn>,
    opts: SpawnOptions,
  ) {
    this.id = prep.id;
    this.pid = fds.pid;
    this.cgroups = prep.cgroups.map((d) => d.dir);
    if (prep.net) this.address = prep.net.address;
    this.syncFd = fds.syncFd;
    this.stdin = fds.stdinFd >= 0 ? stdinWriter(fds.stdinFd) : null;
    this.stdout = fds.stdoutFd >= 0 ? Bun.file(fds.stdoutFd).stream() : null;
    this.stderr = fds.stderrFd >= 0 ? Bun.file(fds.stderrFd).stream() : null;

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
      this.release(false);
      const wait = await reapJail(this.pid);
      this.alive = false;
      return wait;
    });
    this.closed = reaped.then(() => this.cleanUp());
    this.exited = this.result(ended, reaped);
    // The payload's end: its address comes off the host while the jail's namespaces go (once
    // whoever waits for the result has it).
    if (prep.net) {
      const net = prep.net;
      void this.exited
        .catch(() => {})
        .then(() => this.attached?.catch(() => {}))
        .then(() => setImmediate(() => unwireNet(net)));
    }

    const ownerPlaces = spec.userns ? prep.cgroups : [];
    this.wired = (!prep.net || prep.net.ready) && ownerPlaces.length === 0;
    if (!this.wired) this.wire(ownerPlaces);
    if (!opts.hold) this.start();
  }

  /** A payload that is refused leaves the jail as it was, still waiting to start. */
  readonly start = (what?: JailPayload): void => {
    if (this.started) return;
    if (what) {
      validatePayload(what);
      checkPayloadFilter(this.spec, what);
      this.payload = payloadMessage(what);
    }
    this.started = true;
    if (this.wired) this.release(true);
  };

  readonly kill = (signal: NodeJS.Signals | number = "SIGKILL"): void => {
    if (!this.alive) return;
    const n = signalNumber(signal);
    if (n === platformNumbers().signals.SIGKILL) this.killedByOwner = true;
    try {
      process.kill(this.pid, ownerSignal(n));
    } catch {}
  };

  /** Lets the payload go (the go byte, or a pre-made jail's payload), or gives up on it. */
  private release(go: boolean): void {
    if (this.released) return;
    this.released = true;
    if (this.syncFd >= 0) {
      try {
        if (go && this.payload) writeSync(this.syncFd, this.payload);
        else if (go) writeSync(this.syncFd, "g");
      } catch {
        // The jail died during setup; its status pipe says why.
      }
      closeSync(this.syncFd);
      this.syncFd = -1;
    }
    // The timeout counts the payload's time, not the jail's setup (or its wait in a pool).
    if (go && this.spec.timeoutMs) {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        this.kill("SIGKILL");
      }, this.spec.timeoutMs);
    }
  }

  /**
   * While the jail sets itself up, the owner wires its network (net "private") and places a
   * user-namespaced jail in its cgroups, off the event loop; then the payload may go. A
   * failure kills the jail, which then reports a setup error naming the step.
   */
  private wire(ownerPlaces: CgroupDir[]): void {
    const fail = (what: string) => (e: Error) => {
      this.prepFailure ??= `${what}: ${e.message}`;
      this.kill("SIGKILL");
      throw e;
    };
    const { net } = this.prep;
    this.attached = net && !net.ready ? attachNet(net, this.pid).catch(fail("network")) : null;
    const placed =
      ownerPlaces.length > 0
        ? joinCgroups(ownerPlaces, this.spec.limits ?? {}, this.pid).catch(fail("cgroups"))
        : null;
    Promise.all([this.attached, placed]).then(
      () => {
        this.wired = true;
        if (this.started) this.release(true);
      },
      () => {},
    );
  }

  private async result(ended: Promise<string>, reaped: Promise<number | null>): Promise<JailResult> {
    const report = parseStatus(await ended);
    this.ends = report;
    if (this.timer) clearTimeout(this.timer);
    const { cgroups } = this.prep;
    const keeperKilled = report.exitCode === undefined && report.signal === undefined && !report.error;
    // Only a jail whose keeper was killed needs its wait status to tell how it ended.
    const wait = keeperKilled ? await reaped : null;
    // A payload that exited 0 succeeded, whatever its children met. Otherwise ask the memory
    // cgroup; the kernel counts an OOM kill just after it sends the SIGKILL, so a killed jail
    // is checked once more after it is reaped, when the killer has certainly finished.
    const sigkilled = !this.killedByOwner && (report.signal === 9 || keeperKilled);
    const succeeded = report.exitCode === 0 && !report.error;
    let oom = cgroups.length > 0 && !succeeded && oomKilled(cgroups);
    if (!oom && cgroups.length > 0 && sigkilled) {
      await reaped;
      oom = oomKilled(cgroups, true);
    }
    return resultOf(report, {
      id: this.id,
      durationMs: performance.now() - this.prep.started,
      wait,
      oom,
      timedOut: this.timedOut,
      prepFailure: this.prepFailure,
      ownerMs: this.prep.ownerMs,
    });
  }

  /** Once the jail is gone: its network, cgroups and scratch directories. */
  private async cleanUp(): Promise<void> {
    const { net, cgroups, work, freebsdStage } = this.prep;
    if (net) {
      await this.attached?.catch(() => {});
      await releaseNet(net); // veth, route, filter and NAT elements, lease
    }
    // After the result, which may read the memory cgroup's counters; then another jail may
    // have the cgroups.
    await this.exited.catch(() => {});
    await releaseCgroups(cgroups, this.spec.limits);
    if (work) await removeLeftover(work);
    if (freebsdStage && stageTornDown(this.ends)) await removeLeftover(freebsdStage);
  }
}

/**
 * FreeBSD: the supervisor unmounts the stage's mounts before it reports. Without a report (it
 * was killed) or after a teardown error something may still be mounted there: the stage stays
 * (lj gc collects dead jails' mounts).
 */
export function stageTornDown(report: StatusReport | undefined): boolean {
  if (!report || report.teardownError !== undefined) return false;
  return report.exitCode !== undefined || report.signal !== undefined || report.error !== undefined;
}

/** Removes a scratch directory unless something is still mounted in it (see scratch.ts). */
async function removeLeftover(dir: string): Promise<void> {
  const r = await removeScratch(dir);
  if (!r.removed) process.stderr.write(`lightjail: kept ${dir}: ${r.mounted} is still mounted there\n`);
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
