/**
 * What the API's resources share: the options they are made with, reading JSON bodies within
 * their limit, and streaming text (deploy logs, app logs, one-off output) as it comes.
 */
import type { Server } from "bun";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { LjError } from "../../errors.ts";
import type { Domains } from "../../paas/domains.ts";
import type { Paas } from "../../paas/paas.ts";
import type { ServiceManager } from "../../paas/services.ts";
import type { CertManager } from "../edge/certs.ts";

export interface ApiOptions {
  paas: Paas;
  services?: ServiceManager;
  token: string;
  /** How the git hook reaches this server (http://127.0.0.1:PORT). */
  selfUrl: () => string;
  domain: string;
  /** Largest compressed upload accepted (bytes). */
  maxUploadBytes?: number;
  /** Custom domains and their certificates (lj domains). */
  domains?: Domains;
  certs?: CertManager;
}

export type Env = { Bindings: { server?: Server<unknown> } };

export const JSON_LIMIT = 64 * 1024;
export const DEFAULT_MAX_UPLOAD = 256 * 1024 * 1024;

export const textHeaders = {
  "content-type": "text/plain; charset=utf-8",
  "x-content-type-options": "nosniff",
};

/** On every route that reads a JSON body: larger bodies are refused before they are read. */
export const jsonLimit: MiddlewareHandler<Env> = bodyLimit({
  maxSize: JSON_LIMIT,
  onError: () => {
    throw new LjError("usage", "body-too-large", `request bodies are limited to ${JSON_LIMIT} bytes`, {
      httpStatus: 413,
    });
  },
});

export async function readJson<T>(c: Context<Env>): Promise<T> {
  try {
    return (await c.req.json()) as T;
  } catch {
    throw new LjError("usage", "bad-json", "the request body is not valid JSON");
  }
}

/** Long-lived requests (uploads, deploy logs, follows, runs) must not hit the idle timeout. */
export function noIdleTimeout(c: Context<Env>): void {
  c.env?.server?.timeout?.(c.req.raw, 0);
}

/** Text frames pushed by callbacks (log lines, a process's output), read as they come. */
export class FrameQueue implements AsyncIterable<string> {
  private frames: string[] = [];
  private wake: (() => void) | null = null;
  private ended = false;

  constructor(first: string[] = []) {
    this.frames.push(...first);
  }

  push(frame: string): void {
    this.frames.push(frame);
    this.wake?.();
  }

  /** No more frames: the reader finishes once it has the ones queued. */
  end(): void {
    this.ended = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<string> {
    for (;;) {
      while (this.frames.length) yield this.frames.shift()!;
      if (this.ended) return;
      await new Promise<void>((r) => {
        this.wake = r;
      });
      this.wake = null;
    }
  }
}

/**
 * A streamed response of text frames, each sent as it comes; `onCancel` runs when the client
 * goes away first (a follower unsubscribes, a one-off process is killed).
 */
export function streamed(
  frames: AsyncIterable<string>,
  headers: Record<string, string>,
  onCancel?: () => void,
): Response {
  const enc = new TextEncoder();
  const it = frames[Symbol.asyncIterator]();
  const body = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      const { value, done } = await it.next();
      if (done) ctl.close();
      else ctl.enqueue(enc.encode(value));
    },
    cancel() {
      onCancel?.();
      void it.return?.();
    },
  });
  return new Response(body, { headers });
}
