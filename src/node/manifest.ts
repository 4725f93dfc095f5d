/**
 * The contract between the lj serve that built a release and the nodes that run it: the
 * manifest of GET /node/v1/releases/APP/vN (served by src/cluster/artefacts.ts, read by
 * release-images.ts) and its blobs, named by digest.
 */
export const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

export interface Blob {
  digest: string;
  size: number;
}

/** GET /node/v1/releases/APP/vN: what a node needs to run a release (docs/cluster.md). */
export interface ReleaseManifest {
  app: string;
  version: number;
  /** The world the layers go over: the node's own world of this name. */
  world: string;
  /** Bottom to top: the overlays of the chain, then the slug. */
  layers: (Blob & { kind: "overlay" | "slug"; name: string })[];
  cwd: string;
  /** What each process type runs (argv as the local supervisor runs it). */
  processes: Record<string, { command: string; argv: string[] }>;
  env: Record<string, string>;
  limits: { memoryMb?: number; pids?: number; cpus?: number };
}
