/**
 * A container's output as `kubectl logs` reads it: the lines of its current run and of the run
 * before (`--previous`), each with the time it arrived, and live followers. Kept in memory, a
 * bounded ring per run: a node agent that restarts starts with empty logs.
 */
export interface LogEntry {
  /** RFC 3339 with nanoseconds, as the kubelet writes timestamps. */
  time: string;
  text: string;
}

const RING = 5000;

export interface LogQuery {
  tailLines?: number;
  sinceSeconds?: number;
  limitBytes?: number;
  timestamps?: boolean;
}

export class ContainerLog {
  private current: LogEntry[] = [];
  private previous: LogEntry[] = [];
  private followers = new Set<(e: LogEntry | null) => void>();

  /** A new run of the container: the current lines become the previous run's. */
  newRun(): void {
    this.previous = this.current;
    this.current = [];
  }

  write(text: string): void {
    const now = new Date();
    const e = { time: now.toISOString().replace(/Z$/, "000000Z"), text };
    this.current.push(e);
    if (this.current.length > RING) this.current.splice(0, this.current.length - RING);
    for (const f of this.followers) f(e);
  }

  /** The container's run ended: followers get their end. */
  endRun(): void {
    for (const f of this.followers) f(null);
    this.followers.clear();
  }

  render(q: LogQuery, previous = false): string {
    let lines = previous ? this.previous : this.current;
    if (q.sinceSeconds !== undefined) {
      const since = Date.now() - q.sinceSeconds * 1000;
      lines = lines.filter((l) => Date.parse(l.time.replace(/(\.\d{3})\d+Z$/, "$1Z")) >= since);
    }
    if (q.tailLines !== undefined) lines = q.tailLines === 0 ? [] : lines.slice(-q.tailLines);
    let out = lines.map((l) => formatEntry(l, q.timestamps)).join("");
    if (q.limitBytes !== undefined) out = Buffer.from(out).subarray(0, q.limitBytes).toString();
    return out;
  }

  follow(fn: (e: LogEntry | null) => void): () => void {
    this.followers.add(fn);
    return () => this.followers.delete(fn);
  }
}

export const formatEntry = (e: LogEntry, timestamps?: boolean) =>
  timestamps ? `${e.time} ${e.text}\n` : `${e.text}\n`;
