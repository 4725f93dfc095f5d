import { describe, expect, test } from "bun:test";
import type { V1Pod } from "@kubernetes/client-node";
import { type PodHost, PodRunner } from "../../src/node/pod.ts";

const host = (execProbes: boolean): PodHost & { changes: number } => {
  const h = {
    nodeName: "n1",
    hostIP: "127.0.0.1",
    execProbes,
    changes: 0,
    changed() {
      h.changes += 1;
    },
    publish: async () => null,
    releases: null,
    log() {},
  };
  return h;
};

const withExecProbe: V1Pod = {
  metadata: { name: "p", namespace: "default", uid: "u1" },
  spec: {
    nodeName: "n1",
    containers: [
      {
        name: "c",
        image: "lj.local/world:test",
        command: ["sleep", "60"],
        readinessProbe: { exec: { command: ["true"] } },
      },
    ],
  },
};

describe("a node's pods", () => {
  test("a pod with an exec probe is refused where exec probes are off (the default)", () => {
    const h = host(false);
    const r = new PodRunner(withExecProbe, h);
    r.start();
    const s = r.status() as { phase: string; reason: string; message: string };
    expect(s.phase).toBe("Failed");
    expect(s.reason).toBe("Unsupported");
    expect(s.message).toContain("lj node run --exec-probes");
    expect(h.changes).toBe(1);
  });
});
