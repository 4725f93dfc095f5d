/**
 * execInJail: a command run inside a running Linux jail, as confined as the jail's own payload
 * (a pod's exec probe). The native `ljexec` (zig/src/ljexec.zig) does the work: it joins the
 * jail's cgroups and namespaces, takes its root and rlimits, drops every capability, becomes
 * the given uid and gid, sets no_new_privs, installs the jail's seccomp filter and executes the
 * command. Its environment is exactly `env`.
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { LjError } from "../errors.ts";
import { libraryPath } from "./ffi.ts";
import type { Jail } from "./spawn.ts";

export interface ExecOptions {
  uid: number;
  gid: number;
  /** The command's whole environment (PATH in it finds the command). */
  env: Record<string, string>;
  /** A directory in the jail (default /). */
  cwd?: string;
  /** After this the command is killed (SIGKILL); its result says timedOut. */
  timeoutMs: number;
  /** Output kept of each stream; the rest is read and dropped (default 64 KiB). */
  maxOutputBytes?: number;
}

export interface ExecResult {
  /** The command's exit status (128+N for signal N); 125: ljexec could not run it (stderr says why). */
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** How long output may still arrive after the command ended (what it left in the pipe). */
const DRAIN_MS = 100;

/** The ljexec binary, installed beside the shim's library (zig-out/bin next to zig-out/lib). */
export function ljexecPath(): string {
  return join(dirname(libraryPath()), "..", "bin", "ljexec");
}

export async function execInJail(
  jail: Pick<Jail, "pid" | "cgroups">,
  command: string[],
  o: ExecOptions,
): Promise<ExecResult> {
  if (process.platform !== "linux") {
    throw new LjError("unavailable", "exec-unsupported", "running a command in a jail is Linux-only");
  }
  if (command.length === 0) throw new LjError("invalid", "exec-command", "no command to run in the jail");
  const bin = ljexecPath();
  if (!existsSync(bin)) {
    throw new LjError("unavailable", "ljexec-missing", `ljexec is not built (${bin} is missing)`, {
      hint: "run ./scripts/bootstrap.sh (or `cd zig && zig build -Doptimize=ReleaseSafe`)",
    });
  }
  const argv = [bin, "--pid", String(jail.pid), "--uid", String(o.uid), "--gid", String(o.gid)];
  if (o.cwd) argv.push("--cwd", o.cwd);
  for (const dir of jail.cgroups) argv.push("--cgroup", dir);
  argv.push("--", ...command);

  const p = Bun.spawn(argv, { env: o.env, stdio: ["ignore", "pipe", "pipe"] });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    // ljexec's child (the command) dies with it: its parent-death signal is SIGKILL.
    p.kill("SIGKILL");
  }, o.timeoutMs);
  const cap = o.maxOutputBytes ?? 64 * 1024;
  const out = collect(p.stdout, cap);
  const err = collect(p.stderr, cap);
  const code = await p.exited;
  clearTimeout(timer);
  // Something the command started in the background may hold the pipes open: what the
  // command wrote is in them already, so the wait for their end is short.
  const drained = Bun.sleep(DRAIN_MS);
  await Promise.race([Promise.all([out.done, err.done]), drained]);
  return { code, stdout: out.stop(), stderr: err.stop(), timedOut };
}

/** Reads a stream to its end, keeping its first `cap` bytes. */
function collect(stream: ReadableStream<Uint8Array>, cap: number): { done: Promise<void>; stop(): string } {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let kept = 0;
  const done = (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        if (kept < cap) {
          const part = value.subarray(0, cap - kept);
          chunks.push(part);
          kept += part.length;
        }
      }
    } catch {
      // cancelled
    }
  })();
  return {
    done,
    stop() {
      reader.cancel().catch(() => {});
      return new TextDecoder().decode(Buffer.concat(chunks));
    },
  };
}
