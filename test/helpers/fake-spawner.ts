/**
 * A spawner that runs no jail (src/paas/supervisor.ts `Spawner`): each "jail" is an object the
 * test drives. It prints lines, listens on its port or not, exits or is killed, as the
 * behaviour chosen for its command says. The PaaS's logic (supervisor, releases, deploys,
 * formation, runs, the API) is then tested without root in milliseconds.
 */
import type { Jail, JailResult } from "../../src/jail/spawn.ts";
import type { JailSpec } from "../../src/jail/spec.ts";
import type { Spawner } from "../../src/paas/supervisor.ts";

/** What a fake process does once spawned. */
export interface Behaviour {
  /** Lines written to stdout at once. */
  output?: string[];
  /** Accepts connections on its port (a web process passes its health check). */
  listens?: boolean;
  /** Exits by itself with this status after `afterMs` (default: runs until killed). */
  exitCode?: number;
  afterMs?: number;
}

export class FakeJail implements Jail {
  readonly pid = 0;
  readonly cgroups: readonly string[] = [];
  readonly stdin = null;
  readonly stdout: ReadableStream<Uint8Array>;
  readonly stderr: ReadableStream<Uint8Array>;
  readonly exited: Promise<JailResult>;
  readonly closed: Promise<void>;
  ended: JailResult | null = null;
  signals: (NodeJS.Signals | number)[] = [];
  private out!: ReadableStreamDefaultController<Uint8Array>;
  private err!: ReadableStreamDefaultController<Uint8Array>;
  private resolveExit!: (r: JailResult) => void;

  constructor(
    readonly id: string,
    readonly spec: JailSpec,
    readonly address: string,
    readonly listens: boolean,
  ) {
    this.stdout = new ReadableStream({
      start: (c) => {
        this.out = c;
      },
    });
    this.stderr = new ReadableStream({
      start: (c) => {
        this.err = c;
      },
    });
    this.exited = new Promise((r) => (this.resolveExit = r));
    this.closed = this.exited.then(() => {});
  }

  print(line: string, stream: "out" | "err" = "out"): void {
    if (this.ended) return;
    (stream === "out" ? this.out : this.err).enqueue(new TextEncoder().encode(`${line}\n`));
  }

  /** Ends the process by itself (`exit N`). */
  exit(code: number): void {
    this.end({ exitCode: code, signal: null, reason: "exit", status: code });
  }

  start(): void {}

  kill(signal: NodeJS.Signals | number = "SIGKILL"): void {
    this.signals.push(signal);
    const n = signal === "SIGKILL" || signal === 9 ? 9 : 15;
    this.end({ exitCode: null, signal: n, reason: "signal", status: 128 + n });
  }

  private end(r: Omit<JailResult, "id" | "durationMs">): void {
    if (this.ended) return;
    this.ended = { id: this.id, durationMs: 0, ...r };
    this.out.close();
    this.err.close();
    this.resolveExit(this.ended);
  }
}

export class FakeSpawner implements Spawner {
  readonly jails: FakeJail[] = [];
  private n = 0;

  /** `behave` picks what a spawned process does from its spec (its command is argv[2]). */
  constructor(public behave: (spec: JailSpec) => Behaviour = () => ({ listens: true })) {}

  spawn(spec: JailSpec): Jail {
    const b = this.behave(spec);
    this.n++;
    const jail = new FakeJail(`fake.${this.n}`, spec, `10.99.0.${this.n}`, b.listens ?? false);
    this.jails.push(jail);
    queueMicrotask(() => {
      for (const l of b.output ?? []) jail.print(l);
      if (b.exitCode !== undefined) setTimeout(() => jail.exit(b.exitCode!), b.afterMs ?? 0);
    });
    return jail;
  }

  async listening(jail: Jail, _port: number, deadline: number): Promise<void> {
    const fake = jail as FakeJail;
    if (fake.listens && !fake.ended) return;
    const left = Math.max(1, deadline - performance.now());
    await Promise.race([fake.exited, Bun.sleep(left)]);
    throw new Error(fake.ended ? "the jail ended before its port opened" : "the port did not open in time");
  }

  /** The live jails of one process (by its LJ_PROCESS name, e.g. web.1) of one app. */
  live(app: string, name?: string): FakeJail[] {
    return this.jails.filter(
      (j) =>
        !j.ended && j.spec.env?.LJ_APP === app && (name === undefined || j.spec.env?.LJ_PROCESS === name),
    );
  }
}

/** The shell command a fake jail was asked to run. */
/** The command line a process was given: under `/bin/sh -c`, or as plain words (commandArgv). */
export const commandOf = (spec: JailSpec): string =>
  spec.argv[0] === "/bin/sh" && spec.argv[1] === "-c" ? (spec.argv[2] ?? "") : spec.argv.join(" ");
