/**
 * Files a plugin asks lightjail to fetch for an overlay build (a runtime's release tarball):
 * fetched on the host, checked against their SRI integrity (`sha512-<base64>`), kept in a cache
 * under the state root by that integrity, and handed to the install script read-only. The
 * install script never needs a network client of its own, and a tampered file never reaches it.
 */
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { paths } from "../store/paths.ts";

const SRI = /^(sha256|sha384|sha512)-([A-Za-z0-9+/]+={0,2})$/;

/** The digest algorithm and expected base64 digest of an SRI string; throws on anything else. */
export function parseIntegrity(integrity: string): { algo: string; digest: string } {
  const m = SRI.exec(integrity.trim());
  if (!m?.[1] || !m[2]) {
    throw new LjError("config", "bad-integrity", `invalid integrity ${JSON.stringify(integrity)}`, {
      hint: "give sha256-, sha384- or sha512- followed by the base64 digest",
    });
  }
  return { algo: m[1], digest: m[2] };
}

/** Fetches `url` into `dest`, verified; from the cache when an earlier fetch had the same integrity. */
export async function fetchVerified(url: string, integrity: string, dest: string, log?: (l: string) => void) {
  const { algo, digest } = parseIntegrity(integrity);
  const cacheDir = join(paths.root(), "cache", "downloads");
  mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
  const cached = join(cacheDir, createHash("sha256").update(integrity).digest("hex"));
  if (!existsSync(cached)) {
    log?.(`fetching ${url}`);
    const res = await fetch(url);
    if (!res.ok || !res.body) {
      throw new LjError("unavailable", "download-failed", `GET ${url}: HTTP ${res.status}`, {
        hint: "check the network, or the registry/mirror the plugin uses",
      });
    }
    const tmp = `${cached}.part-${process.pid}`;
    const hash = createHash(algo);
    const out = Bun.file(tmp).writer();
    try {
      for await (const chunk of res.body) {
        hash.update(chunk);
        out.write(chunk);
      }
      await out.end();
    } catch (e) {
      rmSync(tmp, { force: true });
      throw new LjError("unavailable", "download-failed", `GET ${url}: ${(e as Error).message}`);
    }
    const got = hash.digest("base64");
    if (got !== digest) {
      rmSync(tmp, { force: true });
      throw new LjError(
        "invalid",
        "integrity-mismatch",
        `${url} does not match its integrity (${algo} ${got})`,
        {
          hint: "the registry or a proxy served something else than the release; nothing was installed",
        },
      );
    }
    renameSync(tmp, cached);
  }
  copyFileSync(cached, dest);
}
