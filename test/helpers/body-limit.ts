/**
 * The body limit as an edge enforces it (64 KiB in the tests that use this): a body under it
 * reaches the app (which echoes its size), one over it gets the 413 page naming the setting,
 * and a chunked body (no Content-Length) is counted as it streams and refused alike.
 */
import { expect } from "bun:test";

export async function expectBodyLimit(url: string, host: string): Promise<void> {
  const post = (body: Uint8Array | ReadableStream<Uint8Array>) =>
    fetch(`${url}/`, { method: "POST", headers: { host }, body });
  const ok = await post(new Uint8Array(60 * 1024));
  expect(await ok.text()).toBe(`got ${60 * 1024} bytes\n`);
  const big = await post(new Uint8Array(65 * 1024));
  expect(big.status).toBe(413);
  expect(await big.text()).toContain("--max-body");
  const chunks = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < 10; i++) c.enqueue(new Uint8Array(16 * 1024));
      c.close();
    },
  });
  const chunked = await post(chunks);
  expect(chunked.status).toBe(413);
}
