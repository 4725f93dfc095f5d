/**
 * Forwarding headers as every edge must set them (src/server/edge/forwarding.ts): a client's
 * own are dropped, the edge's set from the TCP peer.
 */
import { expect } from "bun:test";

export type Headers = Record<string, string>;

/** What a client sends to pass for someone else. */
export const SPOOF: Headers = {
  "x-forwarded-for": "6.6.6.6",
  "x-real-ip": "6.6.6.6",
  forwarded: "for=6.6.6.6;proto=https",
  "x-forwarded-proto": "https",
  "x-forwarded-host": "bank.example",
  "x-forwarded-port": "443",
};

/** The headers an app saw from a direct IPv4 client at 127.0.0.1 over plain HTTP to `host`. */
export function expectOwnForwarding(seen: Headers, host: string): void {
  expect(seen["x-forwarded-for"]).toBe("127.0.0.1");
  expect(seen["x-real-ip"]).toBe("127.0.0.1");
  expect(seen["x-forwarded-proto"]).toBe("http");
  expect(seen["x-forwarded-host"]).toBe(host);
  expect(seen.forwarded).toBe(`for=127.0.0.1;proto=http;host=${host}`);
  expect(seen["x-forwarded-port"]).toBeUndefined();
  expect(JSON.stringify(seen)).not.toContain("6.6.6.6");
  expect(JSON.stringify(seen)).not.toContain("bank.example");
}

/** What a trusted proxy in front passes on: the chain of hops before it, and its own view. */
export const TRUSTED_CHAIN: Headers = {
  "x-forwarded-for": "198.51.100.9, 203.0.113.7, 10.1.2.3",
  forwarded: 'for=198.51.100.9, for=203.0.113.7;proto=https, for="[2001:db8::1]"',
  "x-forwarded-proto": "https",
  "x-forwarded-host": "shop.example",
  "x-forwarded-port": "443",
  "x-real-ip": "1.1.1.1",
};

/**
 * The headers an app saw from a trusted proxy at 127.0.0.1 (10.1.0.0/16 trusted too) that sent
 * TRUSTED_CHAIN over plain HTTP to `host`: the chain kept, the peer appended.
 */
export function expectTrustedChainKept(seen: Headers, host: string): void {
  expect(seen["x-forwarded-for"]).toBe("198.51.100.9, 203.0.113.7, 10.1.2.3, 127.0.0.1");
  expect(seen["x-real-ip"]).toBe("203.0.113.7"); // the rightmost hop no trusted proxy stands for
  expect(seen.forwarded).toBe(
    `for=198.51.100.9, for=203.0.113.7;proto=https, for="[2001:db8::1]", for=127.0.0.1;proto=http;host=${host}`,
  );
  expect(seen["x-forwarded-proto"]).toBe("https");
  expect(seen["x-forwarded-host"]).toBe("shop.example");
  expect(seen["x-forwarded-port"]).toBe("443");
}

/** The first message of a WebSocket opened to `url` with `headers` (the echo backends send the headers they got). */
export async function firstWsMessage(url: string, headers: Headers): Promise<string> {
  const ws = new WebSocket(url, { headers } as unknown as string[]);
  try {
    return await new Promise<string>((resolve, reject) => {
      ws.onmessage = (e) => resolve(String(e.data));
      ws.onerror = () => reject(new Error("websocket error"));
    });
  } finally {
    ws.close();
  }
}
