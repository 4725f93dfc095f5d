import { describe, expect, test } from "bun:test";
import type { V1Pod } from "@kubernetes/client-node";
import { type PodHost, PodRunner } from "../../src/node/pod.ts";

const host = (): PodHost & { changes: number } => {
  const h = {
    nodeName: "n1",
    hostIP: "127.0.0.1",
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

const pod = (spec: Partial<NonNullable<V1Pod["spec"]>>): V1Pod => ({
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
    ...spec,
  },
});

function refused(p: V1Pod): { phase: string; reason: string; message: string; changes: number } {
  const h = host();
  const r = new PodRunner(p, h);
  r.start();
  return { ...(r.status() as { phase: string; reason: string; message: string }), changes: h.changes };
}

describe("a node's pods", () => {
  // Exec probes are not among the refusals: they run as confined as the container (test/exec.test.ts).
  test("a pod on the host network is refused", () => {
    const s = refused(pod({ hostNetwork: true }));
    expect(s.phase).toBe("Failed");
    expect(s.reason).toBe("Unsupported");
    expect(s.message).toContain("host network");
    expect(s.changes).toBe(1);
  });

  test("a pod of two containers, or with an init container, is refused", () => {
    const two = pod({});
    two.spec!.containers.push({ name: "d", image: "lj.local/world:test" });
    const init = pod({ initContainers: [{ name: "i", image: "lj.local/world:test" }] });
    for (const p of [two, init]) {
      const s = refused(p);
      expect(s.phase).toBe("Failed");
      expect(s.reason).toBe("Unsupported");
      expect(s.message).toContain("exactly one container");
    }
  });
});
