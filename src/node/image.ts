/**
 * What a pod's container runs, named by its image. lightjail images are not OCI images: the
 * registry host `lj.local` names lightjail's own artefacts.
 *
 *   lj.local/world:NAME   the node's world NAME (a host world, a debootstrapped one, ...);
 *                         the container's `command` (and `args`) say what to run in it.
 *   lj.local/APP:vN       release N of APP, fetched from the `lj serve` that built it
 *                         (docs/cluster.md: not yet available on nodes).
 *
 * Anything else is refused with the reason the pod shows (ErrImagePull / InvalidImageName).
 */
import { LjError } from "../errors.ts";
import type { BindMount } from "../jail/spec.ts";
import { worldMounts, worldPath } from "../store/worlds.ts";

export const IMAGE_HOST = "lj.local";

export type ImageRef = { kind: "world"; world: string } | { kind: "release"; app: string; version: number };

/** The root a container's jail is made of: read-only layers, their binds and a working directory. */
export interface ImageRoot {
  layers: string[];
  mounts: BindMount[];
  /** The directory the image's files live in (the world's, for identity files). */
  base: string;
  cwd: string;
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

export async function resolveImage(image: string): Promise<ImageRoot> {
  const ref = parseImage(image);
  if (ref.kind === "release") {
    throw new ImageError(
      "ErrImagePull",
      `${image}: this node cannot fetch releases from lj serve yet; run a world image (${IMAGE_HOST}/world:NAME)`,
    );
  }
  let base: string;
  try {
    base = worldPath(ref.world);
  } catch (e) {
    throw new ImageError("ErrImagePull", `${image}: ${(e as Error).message}`);
  }
  return { layers: [base], mounts: await worldMounts(ref.world), base, cwd: "/" };
}
