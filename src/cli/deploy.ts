/**
 * `lj deploy [DIR]`: packs the directory (what git would track: .gitignore respected, .git
 * left out) as a tar.gz stream, uploads it with a progress bar and streams the build log.
 */
import { lstatSync, mkdtempSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { defineCommand } from "citty";
import { pack } from "tar-stream";
import { LjError } from "../errors.ts";
import { client, clientArgs, failure, out, printJson } from "./client.ts";

/** Files git would consider: tracked plus untracked-but-not-ignored, in or outside a repository. */
export async function listFiles(dir: string): Promise<string[]> {
  const inRepo = Bun.spawnSync(["git", "-C", dir, "rev-parse", "--show-prefix"], { stderr: "ignore" });
  let tmpGit: string | undefined;
  let argv: string[];
  if (inRepo.exitCode === 0) {
    argv = ["git", "-C", dir, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."];
  } else {
    tmpGit = mkdtempSync(join(tmpdir(), "lj-deploy-"));
    Bun.spawnSync(["git", "init", "-q", "--bare", tmpGit]);
    argv = [
      "git",
      `--git-dir=${tmpGit}`,
      `--work-tree=${dir}`,
      "ls-files",
      "-z",
      "--others",
      "--exclude-standard",
    ];
  }
  const p = Bun.spawn(argv, { cwd: dir, stdout: "pipe", stderr: "pipe" });
  const [text, err, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  if (tmpGit) rmSync(tmpGit, { recursive: true, force: true });
  if (code !== 0) throw new LjError("internal", "list-files", `listing ${dir} failed: ${err.trim()}`);
  return [...new Set(text.split("\0").filter((f) => f && !f.startsWith(".git/")))].sort();
}

/** A tar.gz stream of the files; `progress(done, total)` counts file bytes packed. */
export function packDir(
  dir: string,
  files: string[],
  progress: (done: number, total: number) => void,
): { stream: ReadableStream<Uint8Array>; total: number } {
  const entries = files
    .map((f) => ({ f, st: lstatSync(join(dir, f), { throwIfNoEntry: false }) }))
    .filter((e) => e.st && (e.st.isFile() || e.st.isSymbolicLink()));
  const total = entries.reduce((n, e) => n + (e.st!.isFile() ? e.st!.size : 0), 0);
  const p = pack();
  let done = 0;
  (async () => {
    for (const { f, st } of entries) {
      if (st!.isSymbolicLink()) {
        p.entry({ name: f, type: "symlink", linkname: readlinkSync(join(dir, f)) });
        continue;
      }
      const data = new Uint8Array(await Bun.file(join(dir, f)).arrayBuffer());
      await new Promise<void>((res, rej) =>
        p.entry(
          { name: f, size: data.length, mode: st!.mode & 0o111 ? 0o755 : 0o644, mtime: st!.mtime },
          Buffer.from(data),
          (e) => (e ? rej(e) : res()),
        ),
      );
      done += data.length;
      progress(done, total);
    }
    p.finalize();
  })().catch((e) => p.destroy(e));
  const raw = new ReadableStream<Uint8Array>({
    start(ctl) {
      p.on("data", (c: unknown) => {
        ctl.enqueue(new Uint8Array(c as Buffer));
        if (ctl.desiredSize !== null && ctl.desiredSize <= 0) p.pause();
      });
      p.on("end", () => ctl.close());
      p.on("error", (e: Error) => ctl.error(e));
    },
    pull() {
      p.resume();
    },
  });
  return {
    stream: raw.pipeThrough(
      new CompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>,
    ),
    total,
  };
}

function bar(done: number, total: number): string {
  const w = 30;
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  const n = Math.round(frac * w);
  return `uploading [${"#".repeat(n)}${"-".repeat(w - n)}] ${(frac * 100).toFixed(0).padStart(3)}% ${(done / 1024 / 1024).toFixed(1)} MB`;
}

export const deployCommand = defineCommand({
  meta: {
    name: "deploy",
    description: "Deploy a directory: pack (respecting .gitignore), upload, build, release",
  },
  args: {
    ...clientArgs,
    dir: { type: "positional", required: false, description: "app directory (default .)", default: "." },
    app: { type: "string", alias: "a", description: "app name (default: the directory's name)" },
    create: { type: "boolean", description: "create the app if it does not exist" },
  },
  async run({ args }) {
    const dir = resolve(args.dir ?? ".");
    const app = args.app ?? dir.split("/").pop()!.toLowerCase();
    const c = client(args);
    if (args.create) {
      const r = await c.request("POST", "/api/v1/apps", { name: app });
      if (!r.ok && r.status !== 409) throw await failure(r);
    }
    const files = await listFiles(dir);
    if (files.length === 0) throw new LjError("usage", "empty-dir", `${dir} has no files to deploy`);
    const tty = process.stderr.isTTY && !args.json;
    let last = 0;
    const { stream, total } = packDir(dir, files, (done, all) => {
      const now = performance.now();
      if (tty && (now - last > 100 || done === all)) {
        last = now;
        process.stderr.write(`\r${bar(done, all)}`);
      }
    });
    const res = await c.request(
      "PUT",
      `/api/v1/apps/${app}/source${args.json ? "?wait=json" : ""}`,
      undefined,
      {
        body: stream,
        headers: { "content-type": "application/gzip" },
        duplex: "half",
      } as RequestInit,
    );
    if (tty) process.stderr.write("\n");
    else if (!args.json)
      process.stderr.write(`uploaded ${files.length} files (${(total / 1024 / 1024).toFixed(1)} MB)\n`);
    if (args.json) {
      const body = (await res.json()) as { deploy?: { status: string } };
      if (!res.ok && !body.deploy)
        throw await failure(new Response(JSON.stringify(body), { status: res.status }));
      printJson(body);
      if (body.deploy?.status !== "succeeded") process.exitCode = 1;
      return;
    }
    if (!res.ok || !res.body) throw await failure(res);
    const id = res.headers.get("x-deploy-id");
    for await (const chunk of res.body) process.stdout.write(chunk);
    const d = await c.json<{ status: string; error: string | null; release: number | null }>(
      "GET",
      `/api/v1/deploys/${id}`,
    );
    if (d.status !== "succeeded") {
      throw new LjError("invalid", "deploy-failed", `deploy ${id} failed: ${d.error ?? "unknown error"}`, {
        hint: "the previous release keeps serving; the log above says why",
      });
    }
    out(`deployed ${app} v${d.release}`);
  },
});
