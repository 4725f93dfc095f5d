/**
 * What runs on a world: overlays built over it, app slugs (every kept release is one) and
 * services started on it. A world with users is not removed: their layers would vanish from
 * under running jails and the next start would fail.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { listOverlays, overlayLabel } from "./overlays.ts";
import { paths } from "./paths.ts";

const list = (dir: string): string[] => {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
};

function readJson<T>(file: string): T | null {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as T;
  } catch {
    return null;
  }
}

/** "app NAME", "service NAME", "overlay TYPE/NAME@V (WORLD)": each user of the world once. */
export function worldUsers(world: string): string[] {
  const users: string[] = [];
  for (const app of list(paths.slugs())) {
    const slugs = list(join(paths.slugs(), app)).filter((f) => f.endsWith(".json") && !f.startsWith("."));
    if (slugs.some((f) => readJson<{ world?: string }>(join(paths.slugs(), app, f))?.world === world))
      users.push(`app ${app}`);
  }
  for (const name of list(paths.paasServices())) {
    const rec = readJson<{ runtime?: { world?: string } }>(join(paths.paasServices(), name, "service.json"));
    if (rec?.runtime?.world === world) users.push(`service ${name}`);
  }
  for (const o of listOverlays()) if (o.meta.world === world) users.push(`overlay ${overlayLabel(o.meta)}`);
  return users;
}

/** Throws (kind "conflict") listing the world's users when it has any. */
export function assertWorldUnused(world: string): void {
  const users = worldUsers(world);
  if (users.length === 0) return;
  throw new LjError("conflict", "world-in-use", `world ${world} is used by ${users.join(", ")}`, {
    hint: "destroy those apps and services, and remove those overlays (`lj overlays rm`), first",
  });
}
