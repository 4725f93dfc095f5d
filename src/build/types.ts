/**
 * The contract between app builds (src/build/) and the PaaS (src/paas/): what a plan and a
 * built slug are. Both sides import these types; neither reaches into the other's files.
 */

/** One overlay of a chain, bottom to top after the world. */
export interface OverlayRef {
  /** Overlay type, singular: "language", "service", "tool", ... */
  type: string;
  /** Plugin name, e.g. "node". */
  name: string;
  version: string;
  /** Absolute path of the built overlay directory (a read-only layer). */
  path: string;
}

export interface ProcessType {
  /** Shell command run with /bin/sh -c inside the jail, from the app directory. */
  command: string;
}

export interface AppPlan {
  /** Plugins that matched and why ("package.json present"). */
  detected: { plugin: string; type: string; reasons: string[] }[];
  world: string;
  /** The overlay chain, bottom to top (parents first). */
  overlays: { type: string; name: string; version: string }[];
  /** Build script run in a jail over world + overlays with the app's source writable. */
  build: { script: string; cacheDirs: string[]; env: Record<string, string>; net: "egress" | "none" };
  /** Process types (Procfile wins over plugin defaults); `web` receives PORT. */
  processes: Record<string, ProcessType>;
  env: Record<string, string>;
  limits: { memoryMb: number; pids: number; cpus?: number };
}

/** An immutable built app: an overlay layer holding /app, plus what is needed to run it. */
export interface Slug {
  id: string;
  /** Absolute path of the slug layer (contains app/ at its root). */
  path: string;
  /** World directory and overlay layers to stack beneath the slug, bottom to top. */
  world: string;
  worldPath: string;
  worldMounts: { src: string; dst: string; readonly: boolean }[];
  overlays: OverlayRef[];
  processes: Record<string, ProcessType>;
  env: Record<string, string>;
  /** Working directory of processes inside the jail (the app's directory). */
  cwd: string;
  createdAt: string;
  sizeBytes: number;
  /** Limits the app asks for in its lj.toml `[limits]` (the formation's settings come first). */
  limits?: { memoryMb?: number; pids?: number; cpus?: number };
}

/** Receives one line of build output (already decoded, without the newline). */
export type BuildLog = (line: string) => void;
