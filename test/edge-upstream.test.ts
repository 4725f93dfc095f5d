/**
 * The router's own HTTP/1.1 client toward apps (src/server/edge/upstream.ts), through a real
 * Router and listener, against raw TCP apps that answer exactly the bytes a test gives them:
 * every framing (Content-Length, chunked in odd pieces, to the end of the connection, HEAD,
 * 204, 304, 1xx heads first), keep-alive reuse, an app closing an idle socket, a malformed
 * answer, a large body streamed, repeated headers.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Server, Socket, TCPSocketListener } from "bun";
import { Router, type WsData } from "../src/server/edge/router.ts";

/** What the raw app answers to a request (given its head): chunks written with pauses. */
type Script = (head: string) => (string | Buffer)[] | { parts: (string | Buffer)[]; close: boolean };
type Conn = { buf: string; out: Buffer[]; drained?: () => void };

/** Writes all of `b` (a socket takes what fits; the rest waits for drain). */
async function writeAll(s: Socket<Conn>, b: Buffer): Promise<void> {
  let rest = b;
  for (;;) {
    const n = s.write(rest);
    if (n >= rest.length) return;
    rest = rest.subarray(Math.max(n, 0));
    await new Promise<void>((r) => {
      s.data.drained = r;
    });
  }
}

let script: Script = () => [];
let app: TCPSocketListener<Conn>;
let connections = 0;
const heads: string[] = [];
let edge: Server<WsData>;
let router: Router;

beforeAll(() => {
  app = Bun.listen<Conn>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        connections++;
        s.data = { buf: "", out: [] };
      },
      drain(s) {
        s.data.drained?.();
      },
      async data(s: Socket<Conn>, chunk) {
        s.data.buf += chunk.toString("latin1");
        const end = s.data.buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = s.data.buf.slice(0, end);
        s.data.buf = s.data.buf.slice(end + 4);
        heads.push(head);
        const out = script(head);
        const { parts, close } = Array.isArray(out) ? { parts: out, close: false } : out;
        for (const p of parts) {
          await writeAll(s, Buffer.from(p));
          await Bun.sleep(5);
        }
        if (close) s.end();
      },
    },
  });
  router = new Router({ domain: "u.test", targets: () => [{ address: "127.0.0.1", port: app.port }] });
  edge = Bun.serve<WsData>({
    hostname: "127.0.0.1",
    port: 0,
    fetch: (req, srv) => router.fetch(req, srv, "web") as Promise<Response>,
  });
});

afterAll(() => {
  edge?.stop(true);
  router?.close();
  app?.stop(true);
});

const get = (path = "/", init: RequestInit = {}) =>
  fetch(`http://127.0.0.1:${edge.port}${path}`, {
    ...init,
    headers: { host: "web.u.test", ...(init.headers ?? {}) },
  });

describe("the router's client toward apps", () => {
  test("Content-Length bodies, on one kept-alive socket; the request head is the router's", async () => {
    script = () => ["HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"];
    const before = connections;
    for (let i = 0; i < 5; i++) {
      const r = await get(`/a${i}?q=1`, { headers: { "x-client": "yes", "x-forwarded-for": "6.6.6.6" } });
      expect(r.status).toBe(200);
      expect(r.headers.get("content-type")).toBe("text/plain");
      expect(await r.text()).toBe("hello");
    }
    expect(connections - before).toBe(1);
    const head = heads.at(-1)!;
    expect(head.split("\r\n")[0]).toBe("GET /a4?q=1 HTTP/1.1");
    expect(head).toContain("\r\nhost: web.u.test");
    expect(head).toContain("\r\nx-client: yes");
    expect(head).toContain("\r\nx-forwarded-for: 127.0.0.1");
    expect(head).not.toContain("6.6.6.6");
    expect(head.toLowerCase()).not.toContain("connection:");
  });

  test("a head in pieces, a chunked body in odd pieces, trailers dropped", async () => {
    script = () => [
      "HTTP/1.1 200 OK\r\nTransfer-Enc",
      "oding: chunked\r\nX-A: 1\r\n\r\n4\r\nwiki\r",
      "\n5;ext=1\r\npedia\r\n",
      "E\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n",
    ];
    const r = await get("/chunked");
    expect(r.status).toBe(200);
    expect(r.headers.get("x-a")).toBe("1");
    expect(r.headers.get("transfer-encoding")).not.toBe("chunked, chunked");
    expect(await r.text()).toBe("wikipedia in\r\n\r\nchunks.");
    // The socket is reused after a chunked answer.
    const before = connections;
    script = () => ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"];
    expect(await (await get("/after")).text()).toBe("ok");
    expect(connections).toBe(before);
  });

  test("a body to the end of the connection; Connection: close is not reused", async () => {
    script = () => ({ parts: ["HTTP/1.1 200 OK\r\n\r\nuntil", " the end"], close: true });
    expect(await (await get("/eof")).text()).toBe("until the end");
    script = () => ["HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye"];
    const before = connections;
    expect(await (await get("/close1")).text()).toBe("bye");
    expect(await (await get("/close2")).text()).toBe("bye");
    expect(connections - before).toBe(2);
  });

  test("HEAD, 204 and 304 have no body; 1xx heads before the answer are skipped", async () => {
    script = () => ["HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"];
    const h = await get("/head", { method: "HEAD" });
    expect(h.status).toBe(200);
    expect(await h.text()).toBe("");
    script = () => ["HTTP/1.1 204 No Content\r\n\r\n"];
    expect((await get("/204")).status).toBe(204);
    script = () => ['HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n'];
    const n = await get("/304");
    expect(n.status).toBe(304);
    expect(n.headers.get("etag")).toBe('"x"');
    script = () => [
      "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nmk",
    ];
    const c = await get("/103");
    expect(c.status).toBe(201);
    expect(await c.text()).toBe("mk");
  });

  test("repeated headers stay apart (Set-Cookie)", async () => {
    script = () => ["HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"];
    const r = await get("/cookies");
    expect(r.headers.getSetCookie()).toEqual(["a=1", "b=2"]);
  });

  test("an app that closes an idle kept-alive socket: the request goes out again on a new one", async () => {
    script = () => ({ parts: ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], close: false });
    expect(await (await get("/warm")).text()).toBe("ok");
    // The app now ends every socket right after reading a request, without an answer, once.
    let dropped = 0;
    script = () => {
      if (dropped++ === 0) return { parts: [], close: true };
      return ["HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain"];
    };
    const r = await get("/retry");
    expect(r.status).toBe(200);
    expect(await r.text()).toBe("again");
  });

  test("a malformed answer is a 502 that says so", async () => {
    script = () => ({ parts: ["SPDY/9 what\r\n\r\n"], close: true });
    const r = await get("/bad");
    expect(r.status).toBe(502);
    expect(await r.text()).toContain("not HTTP/1.x");
  });

  test("a large body streams through whole", async () => {
    const big = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = i % 251;
    script = () => [`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n`, big];
    const r = await get("/big");
    const got = Buffer.from(await r.arrayBuffer());
    expect(got.length).toBe(big.length);
    expect(got.equals(big)).toBe(true);
    script = () => ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"];
    expect(await (await get("/after-big")).text()).toBe("ok");
  });

  test("a slow client: the app's socket waits for it, then carries the next request", async () => {
    const big = Buffer.alloc(4 * 1024 * 1024, 7);
    script = () => [`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n`, big];
    const before = connections;
    for (let round = 0; round < 2; round++) {
      const r = await get(`/slow${round}`);
      const reader = r.body!.getReader();
      let n = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        n += value.length;
        if (n < big.length / 2) await Bun.sleep(2);
      }
      expect(n).toBe(big.length);
    }
    script = () => ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"];
    expect(await (await get("/after-slow")).text()).toBe("ok");
    expect(connections - before).toBeLessThanOrEqual(1);
  }, 30_000);

  test("request bodies still reach the app (POST)", async () => {
    script = (head) => {
      const len = /content-length: (\d+)/i.exec(head)?.[1] ?? "none";
      return [`HTTP/1.1 200 OK\r\nContent-Length: ${len.length}\r\n\r\n${len}`];
    };
    const r = await get("/post", { method: "POST", body: "12345" });
    expect(await r.text()).toBe("5");
  });
});
