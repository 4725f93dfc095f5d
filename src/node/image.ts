/**
 * What a pod's container runs, named by its image. lightjail images are not OCI images: the
 * registry host `lj.local` names lightjail's own artefacts.
 *
 *   lj.local/world:NAME   the node's world NAME (a host world, a debootstrapped one, ...);
 *                         the container's `command` (and `args`) say what to run in it.
 *   lj.local/APP:vN       release N of APP, fetched from the `lj serve` that built it
 *                         (release-images.ts): its overlays and slug over the node's world of
 *                         the same name, with the release's env; a container without a
 *                         `command` runs the release's process type named like the container.
 *
 * Anything else is refused with the reason the pod shows (ErrImagePull / InvalidImageName).
 */
import { LjError } from "../errors.ts";
import type { BindMount } from "../jail/spec.ts";
import { worldMounts, worldPath } from "../store/worlds.ts";
import { PullError, type ReleaseImages } from "./release-images.ts";

export const IMAGE_HOST = "lj.local";

export type ImageRef = { kind: "world"; world: string } | { kind: "release"; app: string; version: number };

/** The root a container's jail is made of: read-only layers, their binds and a working directory. */
export interface ImageRoot {
  layers: string[];
  mounts: BindMount[];
  /** The directory the image's files live in (the world's, for identity files). */
  base: string;
  cwd: string;
  /** The env the image gives its processes (a release's); the container's own comes after. */
  env: Record<string, string>;
  /** What the image runs by process type (a release's Procfile); a world runs nothing by itself. */
  processes: Record<string, string[]>;
  /** The pod is done with the image (its cached layers may be collected). */
  release(): void;
}

export class ImageError extends LjError {
  constructor(
    /** The container's waiting reason, as the kubelet names it. */
    readonly reason: "InvalidImageName" | "ErrImagePull",
    message: string,
  ) {
    super("invalid", "bad-image", message);
  }
}

export function parseImage(image: string): ImageRef {
  const m = /^lj\.local\/([a-z0-9][a-z0-9._-]*):([A-Za-z0-9._-]+)$/.exec(image);
  if (!m) {
    throw new ImageError(
      "InvalidImageName",
      `lightjail nodes run ${IMAGE_HOST}/world:NAME or ${IMAGE_HOST}/APP:vN images, not "${image}"`,
    );
  }
  const [, repo, tag] = m as unknown as [string, string, string];
  if (repo === "world") return { kind: "world", world: tag };
  const v = /^v(\d+)$/.exec(tag);
  if (!v) throw new ImageError("InvalidImageName", `a release image's tag is vN (got "${tag}")`);
  return { kind: "release", app: repo, version: Number(v[1]) };
}

/**
 * A release holds its app's config (secrets among it), so only the app's own namespace may run
 * it: `lj.local/APP:vN` runs in namespace `lj-APP` (where `lj serve --scheduler kubernetes`
 * puts the app) and nowhere else, whoever may create pods elsewhere.
 */
export const releaseNamespace = (app: string) => `lj-${app}`;

export async function resolveImage(
  image: string,
  releases: ReleaseImages | null,
  namespace: string,
): Promise<ImageRoot> {
  const ref = parseImage(image);
  if (ref.kind === "release") {
    if (namespace !== releaseNamespace(ref.app)) {
      throw new ImageError(
        "ErrImagePull",
        `${image} runs only in namespace ${releaseNamespace(ref.app)} (its app's), not in ${namespace}`,
      );
    }
    if (!releases) {
      throw new ImageError(
        "ErrImagePull",
        `${image}: this node has no release server (lj node run --release-server URL --node-token-file FILE)`,
      );
    }
    return releaseRoot(image, ref.app, ref.version, releases);
  }
  const base = world(image, ref.world);
  return {
    layers: [base],
    mounts: await worldMounts(ref.world),
    base,
    cwd: "/",
    env: {},
    processes: {},
    release: () => {},
  };
}

function world(image: string, name: string): string {
  try {
    return worldPath(name);
  } catch (e) {
    throw new ImageError("ErrImagePull", `${image}: ${(e as Error).message}`);
  }
}

async function releaseRoot(
  image: string,
  app: string,
  version: number,
  releases: ReleaseImages,
): Promise<ImageRoot> {
  let pulled: Awaited<ReturnType<ReleaseImages["pull"]>>;
  try {
    pulled = await releases.pull(app, version);
  } catch (e) {
    if (e instanceof PullError || e instanceof LjError)
      throw new ImageError("ErrImagePull", `${image}: ${(e as Error).message}`);
    throw e;
  }
  try {
    const m = pulled.manifest;
    const base = world(image, m.world);
    return {
      layers: [base, ...pulled.layers],
      mounts: await worldMounts(m.world),
      base,
      cwd: m.cwd,
      env: m.env,
      processes: Object.fromEntries(Object.entries(m.processes).map(([t, p]) => [t, p.argv])),
      release: pulled.release,
    };
  } catch (e) {
    pulled.release();
    throw e;
  }
}
