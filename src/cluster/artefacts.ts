/**
 * A release's run artefacts, as `lj serve` hands them to Kubernetes nodes: the slug layer and
 * each overlay of its chain as a gzipped tar named by its sha256 digest, and a manifest that
 * says how they stack (over the world the node has by name), what each process type runs and
 * the env a process of the release gets. Nodes fetch the manifest, then the blobs they do not
 * have, and check every blob's digest before they use it (src/node/release-images.ts).
 *
 * Layers are immutable directories (a rebuilt overlay is a new directory renamed into place),
 * so each is packed once, on first demand, keyed by its path and its directory's inode and
 * mtime; the packed blobs live under paas/artefacts/ and are a cache: the directory is
 * emptied when the server starts. Archive entries are directories, regular files and
 * symlinks with their modes, owned by root: on a node a pod runs as its namespace's uid, not
 * the app's, so the app's files are readable there and not its own. Other entries (overlayfs
 * whiteouts, which the sanitiser may leave in an overlay) are not carried.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, type Stats } from "node:fs";
import * as fsp from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import * as zlib from "node:zlib";
import * as tar from "tar-stream";
import { LjError } from "../errors.ts";
import { type Blob, DIGEST_RE, type ReleaseManifest } from "../node/manifest.ts";
import { commandArgv, RELEASE_PHASE, type ReleaseOf, releaseEnv } from "../paas/process-spec.ts";
import { paths } from "../store/paths.ts";
import { removeTree } from "../store/tree.ts";

interface Packed extends Blob {
  file: string;
}

export class ReleaseArtefacts {
  private readonly dir = join(paths.paas(), "artefacts");
  /** layer key -> its blob (or the packing under way). */
  private readonly layers = new Map<string, Promise<Packed>>();
  private readonly blobs = new Map<string, Packed>();
  private ready: Promise<void> | null = null;

  /** `releaseOf`: a recorded release, or one being rolled out (Formation.releaseOf). */
  constructor(private readonly releaseOf: (app: string, version: number) => ReleaseOf) {}

  /** The manifest of release `version` of `app`; packs layers not packed yet. */
  async manifest(app: string, version: number): Promise<ReleaseManifest> {
    const rel = this.releaseOf(app, version);
    const { slug } = rel;
    const overlays = await Promise.all(slug.overlays.map((o) => this.pack(o.path)));
    const top = await this.pack(slug.path);
    const processes: ReleaseManifest["processes"] = {};
    for (const [type, p] of Object.entries(slug.processes)) {
      if (type !== RELEASE_PHASE) processes[type] = { command: p.command, argv: commandArgv(p.command) };
    }
    return {
      app,
      version,
      world: slug.world,
      layers: [
        ...slug.overlays.map((o, i) => ({
          kind: "overlay" as const,
          name: `${o.type}/${o.name}@${o.version}`,
          digest: overlays[i]!.digest,
          size: overlays[i]!.size,
        })),
        { kind: "slug", name: `${app}/${slug.id}`, digest: top.digest, size: top.size },
      ],
      cwd: slug.cwd,
      processes,
      env: releaseEnv(app, rel),
      limits: slug.limits ?? {},
    };
  }

  /** A blob this server packed (a digest it never handed out is not found). */
  blob(digest: string): Packed {
    const b = DIGEST_RE.test(digest) ? this.blobs.get(digest) : undefined;
    if (!b) throw new LjError("not-found", "no-blob", `no artefact ${digest} here`);
    return b;
  }

  private async pack(layer: string): Promise<Packed> {
    const st = await fsp.stat(layer).catch(() => null);
    if (!st?.isDirectory())
      throw new LjError("not-found", "layer-gone", `the release's layer ${layer} is gone from this server`);
    const key = `${layer}\0${st.ino}\0${st.mtimeMs}`;
    let p = this.layers.get(key);
    if (!p) {
      p = this.packNew(layer);
      this.layers.set(key, p);
      p.catch(() => this.layers.delete(key));
    }
    return p;
  }

  private async packNew(layer: string): Promise<Packed> {
    this.ready ??= removeTree(this.dir).then(async () => {
      await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    });
    await this.ready;
    const tmp = join(this.dir, `.pack-${crypto.randomUUID()}`);
    try {
      const { digest, size } = await packTree(layer, tmp);
      const file = join(this.dir, `${digest.slice("sha256:".length)}.tar.gz`);
      await fsp.rename(tmp, file);
      const packed = { digest, size, file };
      this.blobs.set(digest, packed);
      return packed;
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw e;
    }
  }
}

/** Packs `dir` into a gzipped tar at `out`; returns its digest and size. */
async function packTree(dir: string, out: string): Promise<Blob> {
  const pack = tar.pack();
  const hash = createHash("sha256");
  let size = 0;
  const gz = zlib.createGzip({ level: 6 });
  gz.on("data", (c: Buffer) => {
    hash.update(c);
    size += c.length;
  });
  const written = pipeline(pack, gz, createWriteStream(out, { mode: 0o600 }));
  written.catch(() => {});
  const header = (name: string, st: Stats) => ({
    name,
    mode: st.mode & 0o777,
    uid: 0,
    gid: 0,
    mtime: st.mtime,
  });
  const walk = async (abs: string, rel: string): Promise<void> => {
    const names = (await fsp.readdir(abs)).sort();
    for (const n of names) {
      const p = join(abs, n);
      const r = rel ? `${rel}/${n}` : n;
      const st = await fsp.lstat(p);
      if (st.isDirectory()) {
        await entry(pack, { ...header(r, st), type: "directory" });
        await walk(p, r);
      } else if (st.isSymbolicLink()) {
        await entry(pack, { ...header(r, st), type: "symlink", linkname: await fsp.readlink(p) });
      } else if (st.isFile()) {
        const body = pack.entry({ ...header(r, st), type: "file", size: st.size });
        await pipeline(createReadStream(p), body);
      }
    }
  };
  try {
    await walk(dir, "");
    pack.finalize();
  } catch (e) {
    pack.destroy(e as Error);
    throw e;
  }
  await written;
  return { digest: `sha256:${hash.digest("hex")}`, size };
}

function entry(pack: tar.Pack, h: Parameters<tar.Pack["entry"]>[0]): Promise<void> {
  return new Promise((res, rej) => pack.entry(h, (err) => (err ? rej(err) : res())));
}
