/**
 * JailPool: jails made ahead of time from one template, started with a payload on demand.
 *
 * Most of a spawn is making the jail: namespaces, the overlay root, /proc and /dev, cgroups,
 * the network. A pool does that before it is asked, on the other CPUs, and holds each jail at
 * the point where it would execute its keeper; `spawn` then only sends what to run. Every jail
 * is used once: a pool never reuses a jail, so each payload gets a jail as fresh as spawnJail's.
 * (A jail that waits in a pool holds its mounts, cgroups and address until it is used or the
 * pool is closed, and dies with the pool's owner like any other.)
 */
import { LjError } from "../errors.ts";
import { type Jail, spawnJail } from "./spawn.ts";
import type { JailPayload, JailSpec } from "./spec.ts";

export interface JailPoolOptions {
  /** How many jails to keep ready (default 2). */
  size?: number;
}

interface Ready {
  jail: Jail;
  /** Set when the jail ended while it waited (its setup failed): it is never handed out. */
  dead: boolean;
}

export class JailPool {
  private readonly ready: Ready[] = [];
  private readonly size: number;
  private closed = false;

  /** `template.argv` is a placeholder: each jail runs the payload given to `spawn`. */
  constructor(
    private readonly template: JailSpec,
    opts: JailPoolOptions = {},
  ) {
    this.size = opts.size ?? 2;
    if (!Number.isInteger(this.size) || this.size < 1 || this.size > 64) {
      throw new LjError("usage", "invalid-pool", `a pool holds 1 to 64 jails, not ${opts.size}`);
    }
    if (template.passFds?.length) {
      throw new LjError(
        "usage",
        "invalid-pool",
        "passed descriptors belong to one payload: give them to spawnJail",
      );
    }
    this.fill();
  }

  private fill(): void {
    while (!this.closed && this.ready.length < this.size) {
      const entry: Ready = { jail: spawnJail(this.template, { hold: true }), dead: false };
      entry.jail.exited.then(() => {
        entry.dead = true;
      });
      this.ready.push(entry);
    }
  }

  /** Starts a ready jail with this payload, and makes another in its place. */
  spawn(payload: JailPayload): Jail {
    if (this.closed) throw new LjError("usage", "pool-closed", "this jail pool is closed");
    for (;;) {
      const entry = this.ready.shift();
      if (!entry) break;
      if (entry.dead) continue;
      const newSession = payload.newSession ?? (this.template.stdio?.[0] ?? "ignore") !== "inherit";
      try {
        entry.jail.start({ ...payload, newSession });
      } catch (e) {
        this.ready.unshift(entry); // a refused payload leaves the jail waiting for the next
        throw e;
      }
      this.fill();
      return entry.jail;
    }
    // Every waiting jail failed its setup: spawn one the ordinary way, which reports why.
    this.fill();
    return spawnJail({ ...this.template, ...payload });
  }

  /** Kills the jails still waiting and waits until they are gone. */
  async close(): Promise<void> {
    this.closed = true;
    const waiting = this.ready.splice(0);
    for (const e of waiting) e.jail.kill("SIGKILL");
    await Promise.all(waiting.map((e) => e.jail.closed));
  }
}
