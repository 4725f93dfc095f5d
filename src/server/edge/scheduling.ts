/**
 * How the edge's worker processes are scheduled against the processes they pass requests
 * between: the apps' on this machine, and anything else that shares its CPUs.
 *
 * A proxy on a busy machine loses much of its time to switching between processes. Its write of a
 * request wakes the app, and the woken app, at the same priority, preempts the proxy in the
 * middle of the batch of ready connections epoll gave it; the app's answer wakes the proxy,
 * which preempts the app in turn, and each turn on a CPU carries about one request. Two
 * settings end the ping-pong, so that each side works through everything that is ready before
 * the other runs:
 * - `nice` (default -5, as root): the workers outweigh a process at the default nice, so an app
 *   woken by their writes does not preempt them; they also keep their share of the CPUs when a
 *   tenant's app spins, so every other tenant's requests still move;
 * - `batch` (default on, Linux): the workers run under SCHED_BATCH, whose woken tasks never
 *   preempt the running one (sched(7)), so an answer waits until the app is done with its turn
 *   (it blocks in its own event loop, or its slice ends) instead of cutting it short. On an idle
 *   CPU nothing waits at all; behind a process that never blocks, a woken worker waits at most
 *   its slice.
 *
 * Measured in `bench/edge.ts` (bench/README.md): context switches per request fall to a third and
 * the same nginx passes more requests per CPU second.
 */
import { existsSync } from "node:fs";

export interface EdgeScheduling {
  /** The workers' nice value (-20 to 19); 0 leaves them at lj serve's. */
  nice: number;
  /** SCHED_BATCH for the workers (Linux; left out where chrt(1) is missing or refused). */
  batch: boolean;
}

/** The workers' default nice value when lj serve may raise a priority (root). */
export const EDGE_NICE = -5;

/** chrt(1); LJ_TEST_CHRT stands in for one that the host refuses (tests). */
const CHRT = process.env.LJ_TEST_CHRT ?? "/usr/bin/chrt";

let batchWorks: boolean | undefined;

/**
 * Whether this host lets a process take SCHED_BATCH (a container's seccomp filter may not):
 * tried once with chrt, so that the edge then starts without the policy instead of not at all.
 */
function canBatch(): boolean {
  batchWorks ??=
    process.platform === "linux" &&
    existsSync(CHRT) &&
    Bun.spawnSync(scheduled({ nice: 0, batch: true }, ["/bin/true"]), { stdout: "ignore", stderr: "ignore" })
      .exitCode === 0;
  return batchWorks;
}

/** The defaults, with what lj serve's options set over them. */
export function edgeScheduling(o: Partial<EdgeScheduling> = {}): EdgeScheduling {
  const root = process.getuid?.() === 0;
  return {
    nice: o.nice ?? (root ? EDGE_NICE : 0),
    batch: (o.batch ?? true) && canBatch(),
  };
}

/** A command line that starts `argv` under the scheduling policy (children inherit it). */
export function scheduled(s: EdgeScheduling, argv: string[]): string[] {
  return s.batch ? [CHRT, "--batch", "0", ...argv] : argv;
}

/** A nice value lj serve accepts: an integer from -20 to 19. */
export function validNice(n: number): boolean {
  return Number.isInteger(n) && n >= -20 && n <= 19;
}
