import { closeSync, createReadStream, createWriteStream } from "node:fs";
import { LjError } from "../errors.ts";
import { spawnEndLine } from "../jail/ended.ts";
import { type JailPty, setWindowSize, startOnTerminal } from "../jail/pty.ts";
import { type Jail, type JailResult, spawnJail } from "../jail/spawn.ts";
import type { JailSpec } from "../jail/spec.ts";
import type { WorldMeta } from "../store/worlds.ts";
import { parseSpawnArgs, SPAWN_USAGE, type SpawnArgs, specFromArgs } from "./spawn-args.ts";

/** Resolves -d / --world / --overlay into the jail's root. */
export async function rootFor(a: SpawnArgs): Promise<Pick<JailSpec, "root" | "layers" | "mounts">> {
  if (a.root) {
    // A world directory given with -d still needs what its metadata binds in (a host world's /usr).
    const meta = Bun.file(`${a.root}/.lj-world.json`);
    const extra = (await meta.exists()) ? (((await meta.json()) as WorldMeta).mounts ?? []) : [];
    return { root: a.root, mounts: [...extra, ...a.mounts] };
  }
  const { defaultWorld, worldMounts, worldPath } = await import("../store/worlds.ts");
  const world = a.world ?? (await defaultWorld());
  const base = worldPath(world);
  const extra = await worldMounts(world);
  return { layers: [base, ...a.overlays], mounts: [...extra, ...a.mounts] };
}

/**
 * From a terminal, the jail gets a terminal of its own devpts (`tty` names it, job control
 * works) relayed to ours; a root without /bin/sh to open it gets our terminal as before.
 */
async function spawnOnTerminal(spec: JailSpec): Promise<{ jail: Jail; pty: JailPty | null }> {
  const held = spawnJail({ ...spec, stdio: ["ignore", "ignore", "ignore"] }, { hold: true });
  const size = { rows: process.stdout.rows || 24, cols: process.stdout.columns || 80 };
  const pty = await startOnTerminal(held, spec, size, process.env.TERM || "xterm");
  if (pty) return { jail: held, pty };
  held.kill("SIGKILL");
  await held.closed;
  return { jail: spawnJail(spec), pty: null };
}

/** Our terminal, raw, to the jail's and back, its size following ours; returns the undo. */
function relay(pty: JailPty, jail: Jail): () => Promise<void> {
  const stdin = process.stdin;
  stdin.setRawMode(true);
  const input = createWriteStream("", { fd: pty.master, autoClose: false });
  input.on("error", () => {});
  const onData = (b: Buffer) => input.write(b);
  stdin.on("data", onData);
  stdin.resume();
  const onResize = () => {
    try {
      setWindowSize(pty.master, { rows: process.stdout.rows, cols: process.stdout.columns });
    } catch {}
  };
  process.stdout.on("resize", onResize);
  const output = createReadStream("", { fd: pty.master, autoClose: false, highWaterMark: 64 * 1024 });
  const drained = (async () => {
    try {
      for await (const chunk of output) process.stdout.write(chunk as Uint8Array);
    } catch {
      // EIO: the last process holding the terminal is gone.
    }
  })();
  return async () => {
    // A background process may hold the terminal after the payload ended: stop anyway.
    await Promise.race([drained, jail.exited.then(() => Bun.sleep(300))]);
    output.destroy();
    input.destroy();
    stdin.off("data", onData);
    process.stdout.off("resize", onResize);
    stdin.setRawMode(false);
    stdin.pause();
    try {
      closeSync(pty.master);
    } catch {}
  };
}

export async function runSpawn(raw: string[], prog = "lj"): Promise<number> {
  const a = parseSpawnArgs(raw);
  const spec: JailSpec = {
    ...specFromArgs(a),
    ...(await rootFor(a)),
    stdio: ["inherit", "inherit", "inherit"],
  };
  // Handlers go in before the jail exists: a signal that arrives while it starts is kept and
  // delivered once there is a jail to deliver it to. A terminal delivers ^C and ^\ to the
  // jail's process group itself; forwarding those too would deliver them twice.
  let jail: Jail | undefined;
  const pending: NodeJS.Signals[] = [];
  const tty = process.stdin.isTTY;
  const forwarded: NodeJS.Signals[] = tty
    ? ["SIGHUP", "SIGTERM"]
    : ["SIGINT", "SIGHUP", "SIGQUIT", "SIGTERM"];
  const handlers = forwarded.map((sig) => {
    const h = () => (jail ? jail.kill(sig) : pending.push(sig));
    process.on(sig, h);
    return [sig, h] as const;
  });
  if (tty) for (const sig of ["SIGINT", "SIGQUIT"] as const) process.on(sig, () => {});
  // Bun arms the OS handlers from its event loop: give it one turn before the jail starts.
  await new Promise((r) => setImmediate(r));
  let detach: (() => Promise<void>) | undefined;
  if (tty && process.stdout.isTTY && !a.json && process.platform === "linux") {
    const t = await spawnOnTerminal(spec);
    jail = t.jail;
    if (t.pty) detach = relay(t.pty, jail);
  } else {
    jail = spawnJail(spec);
  }
  for (const sig of pending) jail.kill(sig);
  let result: JailResult;
  try {
    result = await jail.exited;
  } finally {
    await detach?.();
    for (const [sig, h] of handlers) process.off(sig, h);
  }
  await jail.closed;
  if (a.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  }
  if (result.reason === "setup") {
    throw new LjError("isolation", "jail-setup", `jail setup failed: ${result.error}`);
  }
  if (!a.json && result.trace) {
    const width = Math.max(...result.trace.map((s) => s.step.length));
    process.stderr.write(`${prog}: where the time went (ms)\n`);
    for (const s of result.trace) process.stderr.write(`  ${s.step.padEnd(width)}  ${s.ms.toFixed(3)}\n`);
    process.stderr.write(`  ${"total".padEnd(width)}  ${result.durationMs.toFixed(3)}\n`);
  }
  const last = a.json
    ? null
    : spawnEndLine(result, { memory: `${a.memoryMb} MB`, timeout: `${a.timeoutS} s` });
  if (last) process.stderr.write(`${prog}: ${last}\n`);
  return result.status;
}

/** The citty command, for `lj --help` and the command tree (lj.ts runs spawns directly). */
export const spawnCommand = {
  meta: { name: "spawn", description: "Run one process in a fresh, ephemeral jail" },
  async run({ rawArgs }: { rawArgs: string[] }) {
    process.exitCode = await runSpawn(rawArgs);
  },
};

export { SPAWN_USAGE };
