/**
 * Release images on a node: `lj.local/APP:vN` is fetched from the `lj serve` that built it
 * (src/cluster/artefacts.ts). The node asks for the release's manifest with its node token,
 * then for each layer it does not have: the blob is streamed to a temporary file while its
 * sha256 is taken, refused unless it matches the manifest's digest, extracted under the
 * archive rules for root filesystems (src/store/archive.ts) into a temporary sibling, and
 * renamed into the cache, `$LIGHTJAIL_ROOT/node/layers/<hex>/`, where later pods find it.
 *
 * Pods hold the layers they run on; a layer no pod holds is collected once it has been unused
 * for the grace period (on a timer, and when the agent starts: its mtime is its last use).
 */
import { createHash } from "node:crypto";
import { createWriteStream, mkdirSync, readdirSync, renameSync, statSync, utimesSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { join } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { extractTar } from "../store/archive.ts";
import { ljRoot } from "../store/paths.ts";
import { removeTree } from "../store/tree.ts";
import type { ReleaseManifest } from "./manifest.ts";

/** Where release images come from: the lj serve URL and the node token. */
export interface ReleaseSource {
  url: string;
  token: string;
}

export class PullError extends Error {}

const HEX_RE = /^[0-9a-f]{64}$/;
const MANIFEST_MAX = 1024 * 1024;

export interface PulledRelease {
  manifest: ReleaseManifest;
  /** Extracted layers, bottom to top (overlays, then the slug). */
  layers: string[];
  /** Gives the layers back (the pod is gone): they may be collected. */
  release(): void;
}

export class ReleaseImages {
  readonly dir = join(ljRoot(), "node", "layers");
  private readonly holders = new Map<string, number>();
  private readonly lastUse = new Map<string, number>();
  private readonly pulling = new Map<string, Promise<void>>();

  constructor(
    private readonly source: ReleaseSource,
    private readonly log: (line: string) => void = () => {},
  ) {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  /** Fetches what release `version` of `app` needs and holds its layers for a pod. */
  async pull(app: string, version: number): Promise<PulledRelease> {
    const manifest = await this.manifest(app, version);
    const hexes = manifest.layers.map((l) => {
      const hex = l.digest.replace(/^sha256:/, "");
      if (!HEX_RE.test(hex)) throw new PullError(`the manifest names a bad digest "${l.digest}"`);
      return hex;
    });
    for (const h of hexes) this.holders.set(h, (this.holders.get(h) ?? 0) + 1);
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      const t = Date.now();
      for (const h of hexes) {
        const n = (this.holders.get(h) ?? 1) - 1;
        if (n > 0) this.holders.set(h, n);
        else this.holders.delete(h);
        this.lastUse.set(h, t);
      }
    };
    try {
      await Promise.all(manifest.layers.map((l, i) => this.layer(hexes[i]!, l.size, l.name)));
    } catch (e) {
      release();
      throw e;
    }
    const now = new Date();
    for (const h of hexes) utimesSync(join(this.dir, h), now, now);
    return { manifest, layers: hexes.map((h) => join(this.dir, h)), release };
  }

  /** Layers in the cache (digests' hex). */
  cached(): string[] {
    return readdirSync(this.dir).filter((n) => HEX_RE.test(n));
  }

  /**
   * Removes layers no pod holds that have been unused for `graceMs`; with `leftovers`, also
   * what an agent that died mid-pull left (only when no pull of ours is under way).
   */
  async collect(graceMs: number, leftovers = false): Promise<string[]> {
    const removed: string[] = [];
    const t = Date.now();
    for (const n of readdirSync(this.dir)) {
      const p = join(this.dir, n);
      if (!HEX_RE.test(n)) {
        if (leftovers && this.pulling.size === 0) await removeTree(p);
        continue;
      }
      if (this.holders.has(n) || this.pulling.has(n)) continue;
      let used = this.lastUse.get(n);
      if (used === undefined) {
        try {
          used = statSync(p).mtimeMs;
        } catch {
          continue;
        }
      }
      if (t - used < graceMs) continue;
      // Renamed first (atomic): a pull that starts meanwhile fetches it again.
      const gone = join(this.dir, `.gc-${n}-${crypto.randomUUID()}`);
      renameSync(p, gone);
      this.lastUse.delete(n);
      removed.push(n);
      await removeTree(gone);
    }
    if (removed.length) this.log(`collected ${removed.length} unused release layer(s)`);
    return removed;
  }

  private auth(): Record<string, string> {
    return { authorization: `Bearer ${this.source.token}` };
  }

  private async get(path: string): Promise<Response> {
    const url = `${this.source.url.replace(/\/+$/, "")}/node/v1${path}`;
    let res: Response;
    try {
      res = await fetch(url, { headers: this.auth() });
    } catch (e) {
      throw new PullError(`${url}: ${(e as Error).message}`);
    }
    if (!res.ok) {
      const text = await res.text().catch(() => "");
      let msg = text.slice(0, 300);
      try {
        msg = (JSON.parse(text) as { error: { message: string } }).error.message;
      } catch {}
      throw new PullError(`${url}: HTTP ${res.status}: ${msg}`);
    }
    return res;
  }

  private async manifest(app: string, version: number): Promise<ReleaseManifest> {
    const res = await this.get(`/releases/${app}/v${version}`);
    const text = await res.text();
    if (text.length > MANIFEST_MAX) throw new PullError("the release manifest is too large");
    const m = JSON.parse(text) as ReleaseManifest;
    if (!Array.isArray(m.layers) || typeof m.world !== "string" || typeof m.processes !== "object")
      throw new PullError("the release manifest is malformed");
    return m;
  }

  private layer(hex: string, size: number, name: string): Promise<void> {
    if (this.isCached(hex)) return Promise.resolve();
    let p = this.pulling.get(hex);
    if (!p) {
      p = this.fetchLayer(hex, size, name).finally(() => this.pulling.delete(hex));
      this.pulling.set(hex, p);
    }
    return p;
  }

  private isCached(hex: string): boolean {
    try {
      return statSync(join(this.dir, hex)).isDirectory();
    } catch {
      return false;
    }
  }

  private async fetchLayer(hex: string, size: number, name: string): Promise<void> {
    const t0 = performance.now();
    const res = await this.get(`/blobs/sha256:${hex}`);
    if (!res.body) throw new PullError(`blob ${name}: empty response`);
    const tmp = join(this.dir, `.pull-${hex}-${crypto.randomUUID()}.tar.gz`);
    try {
      const hash = createHash("sha256");
      let got = 0;
      const count = new Transform({
        transform(chunk: Buffer, _enc, done) {
          got += chunk.length;
          if (got > size) return done(new PullError(`blob ${name}: larger than its manifest says (${size})`));
          hash.update(chunk);
          done(null, chunk);
        },
      });
      await pipeline(
        Readable.fromWeb(res.body as import("node:stream/web").ReadableStream),
        count,
        createWriteStream(tmp, { mode: 0o600 }),
      );
      const digest = hash.digest("hex");
      if (digest !== hex)
        throw new PullError(`blob ${name}: its digest is sha256:${digest}, the manifest says sha256:${hex}`);
      await extractTar(tmp, join(this.dir, hex), { policy: "rootfs", compression: "gzip" });
      this.log(
        `pulled ${name} (${(got / 1048576).toFixed(1)} MiB, ${Math.round(performance.now() - t0)} ms)`,
      );
    } finally {
      await fsp.rm(tmp, { force: true });
    }
  }
}
