/**
 * One deploy in flight: its log lines are stored as they come and handed to every live reader
 * (the uploading client, a git push's `remote:` lines, `GET /deploys/:id/log?follow=1`).
 */
import type { DeployRow } from "./db.ts";

export class DeployRun {
  readonly lines: string[] = [];
  finished = false;
  private wake = new Set<() => void>();
  readonly done: Promise<DeployRow>;
  private resolveDone!: (r: DeployRow) => void;

  constructor(
    readonly id: number,
    readonly app: string,
    private readonly store: (seq: number, line: string) => void,
  ) {
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  log = (line: string): void => {
    for (const l of line.split("\n")) {
      this.store(this.lines.length, l);
      this.lines.push(l);
    }
    this.notify();
  };

  finish(row: DeployRow): void {
    this.finished = true;
    this.notify();
    this.resolveDone(row);
  }

  private notify(): void {
    const w = [...this.wake];
    this.wake.clear();
    for (const f of w) f();
  }

  async *follow(from = 0): AsyncGenerator<string> {
    let i = from;
    for (;;) {
      while (i < this.lines.length) yield this.lines[i++]!;
      if (this.finished) return;
      await new Promise<void>((r) => this.wake.add(r));
    }
  }
}
