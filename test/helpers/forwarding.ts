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
