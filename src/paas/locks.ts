/**
 * Changes to one app (deploys, config, scaling, restarts, rollbacks, its removal) run one after
 * the other; different apps change in parallel. A failed change does not block the next.
 */
export class AppLocks {
  private readonly tails = new Map<string, Promise<unknown>>();

  /** Runs `fn` once every change queued before it for `app` has settled. */
  run<T>(app: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(app) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => {});
    this.tails.set(app, tail);
    void tail.then(() => {
      if (this.tails.get(app) === tail) this.tails.delete(app);
    });
    return next;
  }

  /** True while a change of `app` runs or waits. */
  busy(app: string): boolean {
    return this.tails.has(app);
  }
}
