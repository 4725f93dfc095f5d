import * as fsp from "node:fs/promises";
import { join } from "node:path";

/**
 * Remove a tree we created. A failed rootfs extraction as non-root can hold 0555 directories
 * (modes are applied at the end, but a failure there is possible), so retry after making
 * directories writable. Never follows symlinks (fs.rm uses lstat).
 */
export async function removeTree(p: string): Promise<void> {
  try {
    await fsp.rm(p, { recursive: true, force: true });
  } catch {
    await makeWritable(p);
    await fsp.rm(p, { recursive: true, force: true });
  }
}

async function makeWritable(p: string): Promise<void> {
  const st = await fsp.lstat(p).catch(() => null);
  if (!st?.isDirectory()) return;
  await fsp.chmod(p, 0o700).catch(() => {});
  for (const e of await fsp.readdir(p).catch(() => [] as string[])) await makeWritable(join(p, e));
}
