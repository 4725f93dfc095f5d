/**
 * pre-receive hook of every app repository (run by git receive-pack under http-backend). It
 * streams the pushed commit's tree (`git archive`) to the server's tarball deploy and prints
 * the deploy log, which git shows the pusher as `remote:` lines; a failed deploy exits 1,
 * which rejects the push. The pushed objects are still in quarantine here, so nothing of a
 * rejected push is kept.
 */
const env = process.env;
const ZERO = /^0+$/;

async function main(): Promise<number> {
  const input = await new Response(Bun.stdin.stream()).text();
  const url = env.LJ_HOOK_URL;
  const token = env.LJ_HOOK_TOKEN;
  const app = env.LJ_APP;
  if (!url || !token || !app) {
    console.log("lightjail: this repository only accepts pushes through lj serve");
    return 1;
  }
  const updates = input
    .split("\n")
    .filter(Boolean)
    .map((l) => l.split(" ") as [string, string, string]);
  const deployable = updates.filter(([, , ref]) => ref === "refs/heads/main" || ref === "refs/heads/master");
  for (const [, , ref] of updates) {
    if (!deployable.some((u) => u[2] === ref)) {
      console.log(`lightjail: only main or master deploy; push to main (not ${ref})`);
      return 1;
    }
  }
  const last = deployable.at(-1);
  if (!last) return 0;
  const rev = last[1];
  if (ZERO.test(rev)) {
    console.log("lightjail: deleting the deployed branch is not allowed");
    return 1;
  }
  const archive = Bun.spawn(["git", "archive", "--format=tar", rev], { stdout: "pipe", stderr: "inherit" });
  const auth = { authorization: `Bearer ${token}` };
  let res: Response;
  try {
    res = await fetch(`${url}/api/v1/apps/${app}/source?source=git:${rev.slice(0, 8)}`, {
      method: "PUT",
      headers: { ...auth, "content-type": "application/x-tar" },
      body: archive.stdout,
      duplex: "half",
    } as RequestInit);
  } catch (e) {
    console.log(`lightjail: cannot reach the server: ${(e as Error).message}`);
    return 1;
  }
  if (!res.ok || !res.body) {
    const body = (await res.json().catch(() => null)) as {
      error?: { message?: string; hint?: string };
    } | null;
    console.log(`lightjail: deploy refused: ${body?.error?.message ?? res.statusText}`);
    if (body?.error?.hint) console.log(`  hint: ${body.error.hint}`);
    return 1;
  }
  const id = res.headers.get("x-deploy-id");
  const dec = new TextDecoder();
  for await (const chunk of res.body) process.stdout.write(dec.decode(chunk, { stream: true }));
  const status = (await fetch(`${url}/api/v1/deploys/${id}`, { headers: auth })
    .then((r) => r.json())
    .catch(() => null)) as { status?: string } | null;
  return status?.status === "succeeded" ? 0 : 1;
}

process.exit(await main());

export {};
