/**
 * The router's HTTP/1.1 client toward app instances for requests without a body (most of
 * them): keep-alive TCP sockets of its own, a pool per instance, the request head written as
 * one string and the response head parsed here. fetch() costs about twice as much per request
 * (it hands every exchange to another thread and builds a Request and a Response each way);
 * requests with a body keep using it (streamed uploads, Expect: 100-continue).
 *
 * Responses are framed by Content-Length, chunked encoding or the end of the connection. A
 * body that has fully arrived with its head is answered from memory; a longer one streams,
 * the socket paused while the client reads slower than the app writes. A socket goes back to
 * the pool after a complete response unless either side said Connection: close.
 */
import type { Socket } from "bun";

/** Longest response head accepted from an app. */
const MAX_HEAD = 64 * 1024;
/** An idle pooled socket is closed after this long (apps close theirs sooner: node after 5 s). */
const IDLE_SECONDS = 30;
/** An app that has not begun its answer after this long gets the request failed (502). */
export const HEAD_TIMEOUT_SECONDS = 300;

const CRLF2 = Buffer.from("\r\n\r\n");

/** Response headers that describe the app's connection, not the response. */
const HOP_RESPONSE = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "proxy-connection",
  "upgrade",
  "trailer",
]);

/** The app closed a pooled socket before answering: safe to send the request again. */
export class StaleSocket extends Error {}

type Framing = "length" | "chunked" | "close" | "none";

interface Exchange {
  head: boolean;
  resolve(res: Response): void;
  reject(e: Error): void;
}

class Conn {
  socket: Socket<Conn> | null = null;
  ex: Exchange | null = null;
  /** Bytes of the response head not yet complete. */
  private headBuf: Buffer | null = null;
  private framing: Framing = "none";
  private remaining = 0;
  private chunkState: "size" | "data" | "crlf" | "trailer" = "size";
  private line = "";
  private reusable = true;
  private responded = false;
  private early: Uint8Array[] = [];
  private status = 0;
  private statusText = "";
  private headers: [string, string][] | null = null;
  private ctl: ReadableStreamDefaultController<Uint8Array> | null = null;
  private unsent: string | null = null;
  /** Reading stopped while the client's queue is full. */
  private paused = false;
  /** Requests this socket carried (a first one that fails is not a stale socket). */
  uses = 0;
  receiving = false;
  /** When the socket went idle, or (while a request is out) when the request was sent. */
  idleSince = 0;

  constructor(private readonly pool: Pool) {}

  send(head: string, isHead: boolean): Promise<Response> {
    return new Promise<Response>((resolve, reject) => {
      this.ex = { head: isHead, resolve, reject };
      this.receiving = false;
      this.responded = false;
      this.headBuf = null;
      this.early = [];
      this.ctl = null;
      this.reusable = true;
      this.uses++;
      this.idleSince = performance.now();
      const n = this.socket!.write(head);
      if (n < head.length) this.unsent = head.slice(Math.max(n, 0));
    });
  }

  drain(): void {
    if (this.unsent === null) return;
    const n = this.socket!.write(this.unsent);
    this.unsent = n < this.unsent.length ? this.unsent.slice(Math.max(n, 0)) : null;
  }

  data(chunk: Buffer): void {
    if (!this.ex) {
      // Bytes nobody asked for: the socket is out of step, never reused.
      this.destroy();
      return;
    }
    this.receiving = true;
    let rest: Buffer | null = chunk;
    try {
      if (!this.headers) {
        rest = this.parseHead(chunk);
        if (!rest) return;
      }
      this.body(rest);
    } catch (e) {
      this.fail(e as Error);
      return;
    }
    this.answer();
  }

  /** Reads the head; returns the bytes after it, or null while it is incomplete. */
  private parseHead(chunk: Buffer): Buffer | null {
    let buf = this.headBuf ? Buffer.concat([this.headBuf, chunk]) : chunk;
    for (;;) {
      const end = buf.indexOf(CRLF2);
      if (end < 0) {
        if (buf.length > MAX_HEAD) throw new Error("the app's response head is too long");
        // Kept past this read: the socket's buffer is not ours after it.
        this.headBuf = Buffer.from(buf);
        return null;
      }
      this.headBuf = null;
      const lines = buf.toString("latin1", 0, end).split("\r\n");
      const first = lines[0]!;
      const status = Number(first.slice(9, 12));
      if (
        !first.startsWith("HTTP/1.") ||
        (first.charCodeAt(12) !== 32 && first.length !== 12) ||
        !(status >= 100 && status <= 599)
      )
        throw new Error("the app's response is not HTTP/1.x");
      buf = buf.subarray(end + 4);
      // 1xx informational heads (100 Continue, 103 Early Hints) precede the real one.
      if (status < 200) continue;
      this.status = status;
      this.statusText = first.slice(13);
      if (first.charCodeAt(7) === 48) this.reusable = false; // HTTP/1.0
      const h: [string, string][] = [];
      let length = -1;
      let chunked = false;
      for (let i = 1; i < lines.length; i++) {
        const l = lines[i]!;
        const colon = l.indexOf(":");
        if (colon <= 0) throw new Error("the app sent a malformed header line");
        const name = l.slice(0, colon);
        let value = l.slice(colon + 1);
        if (value.charCodeAt(0) === 32 || value.charCodeAt(value.length - 1) <= 32) value = value.trim();
        // Only the names that frame the response or describe the connection are looked at.
        const n = name.length;
        if (n !== 14 && n !== 17 && n !== 10 && n !== 16 && n !== 7) {
          h.push([name, value]);
          continue;
        }
        const lower = name.toLowerCase();
        if (lower === "content-length") {
          if (!/^\d+$/.test(value) || (length >= 0 && Number(value) !== length))
            throw new Error("the app sent a bad Content-Length");
          length = Number(value);
        } else if (lower === "transfer-encoding")
          chunked = value.toLowerCase().split(",").pop()!.trim() === "chunked";
        else if (lower === "connection" && /(^|,)\s*close\s*($|,)/i.test(value)) this.reusable = false;
        if (!HOP_RESPONSE.has(lower)) h.push([name, value]);
      }
      this.headers = h;
      if (this.ex!.head || status === 204 || status === 304) this.framing = "none";
      else if (chunked) {
        this.framing = "chunked";
        this.chunkState = "size";
        this.line = "";
        if (length >= 0) this.headers = h.filter(([n]) => n.toLowerCase() !== "content-length");
      } else if (length >= 0) {
        this.framing = "length";
        this.remaining = length;
      } else {
        this.framing = "close";
        this.reusable = false;
      }
      return buf;
    }
  }

  private emit(piece: Uint8Array): void {
    if (piece.length === 0) return;
    if (!this.ctl) {
      // Used before this read returns (answered from memory, or copied into the stream).
      this.early.push(piece);
      return;
    }
    this.ctl.enqueue(new Uint8Array(piece));
    if ((this.ctl.desiredSize ?? 1) <= 0 && !this.paused) {
      this.paused = true;
      this.socket?.pause();
    }
  }

  private body(buf: Buffer): void {
    let at = 0;
    while (
      at < buf.length ||
      this.framing === "none" ||
      (this.framing === "length" && this.remaining === 0)
    ) {
      switch (this.framing) {
        case "none":
          this.finish(at < buf.length);
          return;
        case "close":
          this.emit(buf.subarray(at));
          return;
        case "length": {
          const n = Math.min(this.remaining, buf.length - at);
          // The bytes are copied: the socket's buffer is reused once this returns.
          this.emit(buf.subarray(at, at + n));
          at += n;
          this.remaining -= n;
          if (this.remaining === 0) {
            this.finish(at < buf.length);
            return;
          }
          break;
        }
        case "chunked":
          at = this.chunk(buf, at);
          if (!this.headers) return;
          break;
      }
    }
  }

  /** One step of chunked decoding from `at`; returns where it stopped. */
  private chunk(buf: Buffer, at: number): number {
    if (this.chunkState === "data") {
      const n = Math.min(this.remaining, buf.length - at);
      this.emit(buf.subarray(at, at + n));
      this.remaining -= n;
      if (this.remaining === 0) this.chunkState = "crlf";
      return at + n;
    }
    const nl = buf.indexOf(10, at);
    const end = nl < 0 ? buf.length : nl + 1;
    this.line += buf.toString("latin1", at, end);
    if (this.line.length > 4096) throw new Error("the app sent a malformed chunk");
    if (nl < 0) return end;
    const line = this.line.trimEnd();
    this.line = "";
    if (this.chunkState === "crlf") {
      if (line !== "") throw new Error("the app sent a malformed chunk");
      this.chunkState = "size";
    } else if (this.chunkState === "size") {
      const size = Number.parseInt(line.split(";")[0]!, 16);
      if (!/^[0-9a-fA-F]+/.test(line) || !Number.isSafeInteger(size))
        throw new Error("the app sent a bad chunk size");
      if (size === 0) this.chunkState = "trailer";
      else {
        this.remaining = size;
        this.chunkState = "data";
      }
    } else if (line === "") {
      // The end of the trailers (they are dropped): the response is complete.
      this.finish(end < buf.length);
    }
    return end;
  }

  /** After a read: a response whose body is still coming is handed over as a stream. */
  private answer(): void {
    if (!this.responded && this.headers && this.ex) this.respond(false);
  }

  private respond(complete: boolean): void {
    if (this.responded || !this.ex || !this.headers) return;
    this.responded = true;
    const init = { status: this.status, statusText: this.statusText, headers: this.headers };
    let body: Uint8Array | ReadableStream<Uint8Array> | null;
    if (complete) {
      const parts = this.early;
      body =
        parts.length === 0 ? null : parts.length === 1 ? new Uint8Array(parts[0]!) : Buffer.concat(parts);
      if (this.ex.head || this.status === 204 || this.status === 304) body = null;
    } else {
      const early = this.early;
      body = new ReadableStream<Uint8Array>(
        {
          start: (ctl) => {
            for (const p of early) ctl.enqueue(new Uint8Array(p));
            this.ctl = ctl;
          },
          pull: () => this.resume(),
          cancel: () => this.destroy(),
        },
        { highWaterMark: 4 },
      );
    }
    this.early = [];
    this.ex.resolve(new Response(body, init));
  }

  private resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.socket?.resume();
  }

  /** The response is complete: the socket goes back to the pool or is closed. */
  private finish(extra: boolean): void {
    // Its last bytes may have come in the read that filled the client's queue: reading goes on
    // for the next request.
    this.resume();
    if (!this.responded) this.respond(true);
    else this.ctl?.close();
    this.ctl = null;
    this.ex = null;
    this.headers = null;
    if (extra || !this.reusable) this.destroy();
    else this.pool.release(this);
  }

  /** Fails a request whose answer has not begun since before `late`. */
  overdue(late: number): void {
    if (this.ex && !this.receiving && this.idleSince < late)
      this.fail(new Error(`no answer within ${HEAD_TIMEOUT_SECONDS} s`), false);
  }

  /** Ends the exchange with `e`; a reused socket that failed before any answer may be stale. */
  fail(e: Error, mayBeStale = true): void {
    const ex = this.ex;
    this.ex = null;
    const stale = mayBeStale && !this.receiving && this.uses > 1;
    if (ex && !this.responded) ex.reject(stale ? new StaleSocket(e.message) : e);
    else this.ctl?.error(e);
    this.ctl = null;
    this.destroy();
  }

  closed(): void {
    this.pool.forget(this);
    if (!this.ex) return;
    if (this.headers && this.framing === "close") {
      this.finish(false);
      return;
    }
    this.fail(new Error("the app closed the connection"));
  }

  destroy(): void {
    this.pool.forget(this);
    const s = this.socket;
    this.socket = null;
    s?.end();
  }
}

class Pool {
  private idle: Conn[] = [];
  private all = new Set<Conn>();
  private sweeper: ReturnType<typeof setInterval> | null = null;

  constructor(
    readonly address: string,
    readonly port: number,
    /** Called when the pool has no socket left and stops its timer (its owner forgets it). */
    private readonly onEmpty: () => void,
  ) {}

  private async open(): Promise<Conn> {
    const conn = new Conn(this);
    conn.socket = await Bun.connect<Conn>({
      hostname: this.address,
      port: this.port,
      data: conn,
      socket: {
        data: (s, chunk) => s.data.data(chunk),
        drain: (s) => s.data.drain(),
        close: (s) => s.data.closed(),
        error: (s, e) => s.data.fail(e),
      },
    });
    conn.socket.setNoDelay(true);
    this.all.add(conn);
    this.sweeper ??= setInterval(() => this.sweep(), (IDLE_SECONDS * 1000) / 3);
    this.sweeper.unref?.();
    return conn;
  }

  /** A pooled socket when one is idle (no promise to wait on first), else a new one. */
  request(head: string, isHead: boolean): Promise<Response> {
    const pooled = this.idle.pop();
    if (!pooled) return this.open().then((c) => c.send(head, isHead));
    // An app may close an idle socket just as it is taken: then once more on another one.
    return pooled
      .send(head, isHead)
      .catch((e) => (e instanceof StaleSocket ? this.request(head, isHead) : Promise.reject(e)));
  }

  release(c: Conn): void {
    if (!c.socket) return;
    c.idleSince = performance.now();
    // Idle sockets are swept by a timer (a timeout set per request costs more than this).
    this.idle.push(c);
  }

  private sweep(): void {
    const now = performance.now();
    const old = now - IDLE_SECONDS * 1000;
    for (const c of this.idle.filter((c) => c.idleSince < old)) c.destroy();
    const late = now - HEAD_TIMEOUT_SECONDS * 1000;
    for (const c of this.all) c.overdue(late);
    if (this.all.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = null;
      this.onEmpty();
    }
  }

  forget(c: Conn): void {
    this.all.delete(c);
    const i = this.idle.indexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
  }

  close(): void {
    for (const c of [...this.all]) c.destroy();
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
  }
}

/** Pools of keep-alive sockets toward app instances, one per address and port. */
export class Upstreams {
  private pools = new Map<string, Pool>();

  /** Sends a request head (no body) and resolves with the app's response as it arrives. */
  request(address: string, port: number, head: string, isHead: boolean): Promise<Response> {
    const key = `${address}:${port}`;
    let p = this.pools.get(key);
    if (!p) {
      const pool = new Pool(address, port, () => {
        if (this.pools.get(key) === pool) this.pools.delete(key);
      });
      p = pool;
      this.pools.set(key, p);
    }
    return p.request(head, isHead);
  }

  close(): void {
    for (const p of this.pools.values()) p.close();
    this.pools.clear();
  }
}
