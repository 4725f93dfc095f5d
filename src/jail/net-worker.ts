/**
 * A worker thread for the network requests that wait on the kernel: removing set elements costs
 * nftables an RCU grace period (about 10 ms), which must not stall the owner's event loop.
 * Messages: { id, req } in, { id, error? } out.
 */
import { ShimError, shimNet } from "./ffi.ts";

declare const self: Worker;

self.onmessage = (e: MessageEvent<{ id: number; req: Uint8Array }>) => {
  const { id, req } = e.data;
  try {
    shimNet(req);
    self.postMessage({ id });
  } catch (err) {
    self.postMessage({ id, errno: err instanceof ShimError ? err.errno : 0, message: (err as Error).message });
  }
};
