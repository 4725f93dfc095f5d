import * as tar from "tar-stream";

export interface TarEntry {
  name: string;
  type?: tar.Header["type"];
  body?: string | Buffer;
  mode?: number;
  linkname?: string;
  uid?: number;
  gid?: number;
}

/** Builds a tar in memory with tar-stream, entry by entry (hostile names written verbatim). */
export async function makeTar(entries: TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const out: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack) out.push(c as Buffer);
  })();
  for (const e of entries) {
    const type = e.type ?? "file";
    const body = e.body === undefined ? undefined : Buffer.from(e.body);
    await new Promise<void>((res, rej) => {
      const header: Parameters<tar.Pack["entry"]>[0] = {
        name: e.name,
        type,
        mode: e.mode ?? (type === "directory" ? 0o755 : 0o644),
        linkname: e.linkname,
        uid: e.uid ?? 0,
        gid: e.gid ?? 0,
        size: body?.byteLength ?? 0,
      };
      if (type === "file") pack.entry(header, body ?? Buffer.alloc(0), (err) => (err ? rej(err) : res()));
      else pack.entry(header, (err) => (err ? rej(err) : res()));
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(out);
}
