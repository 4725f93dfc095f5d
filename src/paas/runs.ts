/**
 * One-off processes of an app: `lj run` (piped or on a terminal) and the release command a new
 * release runs before its processes start. Each gets a fresh jail of a release; the jails are
 * tracked so that the server's stop ends them.
 */
import { LjError } from "../errors.ts";
import { describeEnd } from "../jail/ended.ts";
import { type JailPty, startOnTerminal, type WindowSize } from "../jail/pty.ts";
import type { Jail } from "../jail/spawn.ts";
import type { JailSpec } from "../jail/spec.ts";
import { pumpLines } from "../lines.ts";
import type { PaasDb, ReleaseRow } from "./db.ts";
import type { LogHub } from "./logs.ts";
import { type ProcessSpecs, RELEASE_PHASE, type ReleaseOf } from "./process-spec.ts";
import type { Spawner } from "./supervisor.ts";

const RUN_TIMEOUT_MS = 60 * 60 * 1000;
const RELEASE_TIMEOUT_MS = 30 * 60 * 1000;

export class Runs {
  private readonly live = new Set<Jail>();

  constructor(
    private readonly db: PaasDb,
    private readonly specs: ProcessSpecs,
    private readonly logs: LogHub,
    private readonly spawner: Spawner,
  ) {}

  /** A one-off command in a fresh jail of the current release; the caller reads its output. */
  once(app: string, command: string, opts: { stdin?: boolean } = {}): Jail {
    const spec = this.spec(app, command);
    const jail = this.spawner.spawn({ ...spec, ...(opts.stdin ? { stdio: ["pipe", "pipe", "pipe"] } : {}) });
    this.track(jail);
    this.logs.write(app, "lj", `one-off: ${command}`);
    return jail;
  }

  /**
   * A one-off process on a terminal of its own jail's devpts (src/jail/pty.ts): the jail is
   * held until the terminal exists, then runs the command on it as its controlling terminal.
   */
  async onTerminal(
    app: string,
    command: string,
    size: WindowSize,
    term: string,
  ): Promise<{ jail: Jail; pty: JailPty }> {
    const spec = this.spec(app, command);
    const jail = this.spawner.spawn({ ...spec, stdio: ["ignore", "ignore", "ignore"] }, { hold: true });
    this.track(jail);
    this.logs.write(app, "lj", `one-off: ${command}`);
    const pty = await startOnTerminal(jail, spec, size, term);
    if (!pty) {
      jail.kill("SIGKILL");
      throw new LjError("unavailable", "no-shell", "the release has no /bin/sh to open a terminal with", {
        hint: "run without a terminal: lj run --no-tty",
      });
    }
    return { jail, pty };
  }

  /** Throws what a one-off run of the app would throw before it starts (no app, no release). */
  checkRunnable(app: string): ReleaseRow {
    const cur = this.db.currentRelease(app);
    if (!cur) {
      throw new LjError("unavailable", "no-release", `app ${app} has no release yet`, {
        hint: "deploy it first (`lj deploy` or `git push`)",
      });
    }
    return cur;
  }

  /**
   * The release phase (a Procfile's `release:` command, e.g. migrations): run once per new
   * release, in a fresh jail of that release, before any of its processes start. A failure
   * fails the release; the one serving now keeps serving.
   */
  async releaseCommand(app: string, rel: ReleaseOf, log: (l: string) => void): Promise<void> {
    const cmd = rel.slug.processes[RELEASE_PHASE]?.command ?? "";
    log(`-----> Running the release command of v${rel.version}: ${cmd}`);
    const jail = this.spawner.spawn({
      ...this.specs.processSpec(app, rel, RELEASE_PHASE, `${RELEASE_PHASE}.1`),
      timeoutMs: RELEASE_TIMEOUT_MS,
    });
    this.track(jail);
    const out = (l: string) => log(`       ${l}`);
    const [, , r] = await Promise.all([
      pumpLines(jail.stdout, out),
      pumpLines(jail.stderr, out),
      jail.exited,
    ]);
    await jail.closed;
    if (r.status !== 0) {
      const how = describeEnd(r, { timeout: `${RELEASE_TIMEOUT_MS / 60000} minutes` });
      throw new LjError(
        "internal",
        "release-command-failed",
        `the release command of v${rel.version} ${how}`,
        {
          hint: "fix it (or what it needs, e.g. a linked database) and deploy again",
        },
      );
    }
    log(`-----> Release command of v${rel.version} succeeded`);
  }

  /** Ends every one-off process (the server stops). */
  async close(): Promise<void> {
    const all = [...this.live];
    for (const j of all) j.kill("SIGKILL");
    await Promise.all(all.map((j) => j.closed));
  }

  private spec(app: string, command: string): JailSpec {
    const cur = this.checkRunnable(app);
    return { ...this.specs.processSpec(app, cur, "run", "run.1", command), timeoutMs: RUN_TIMEOUT_MS };
  }

  private track(jail: Jail): void {
    this.live.add(jail);
    void jail.closed.then(() => this.live.delete(jail));
  }
}
