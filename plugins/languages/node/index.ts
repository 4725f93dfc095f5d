import { type AppContext, definePlugin, type RuntimeRequest } from "lightjail/plugin";

interface PackageJson {
  main?: string;
  scripts?: Record<string, string>;
  engines?: { node?: string };
}

interface Abbreviated {
  versions: Record<string, { dist: { tarball: string; integrity: string } }>;
}

/** Where Node.js versions come from: the npm registry's official builds, or a mirror of it. */
const registry = (env: Record<string, string | undefined>) =>
  (env.LJ_NPM_REGISTRY ?? "https://registry.npmjs.org").replace(/\/+$/, "");

/** The npm registry package with the official Node.js build for this machine. */
const nodePackage = () => `node-linux-${process.arch === "arm64" ? "arm64" : "x64"}`;

/** The oldest major offered: older ones are out of support and lack what npm 10 needs. */
const OLDEST_MAJOR = 18;

async function versions(
  env: Record<string, string | undefined>,
  pkg: string,
): Promise<Abbreviated["versions"]> {
  const res = await fetch(`${registry(env)}/${pkg}`, {
    headers: { accept: "application/vnd.npm.install-v1+json" },
  });
  if (!res.ok) throw new Error(`the registry answered ${res.status} for ${pkg}`);
  return ((await res.json()) as Abbreviated).versions;
}

/** The highest version satisfying `range`, or null. */
function highest(all: string[], range: string): string | null {
  const ok = all.filter((v) => !v.includes("-") && Bun.semver.satisfies(v, range));
  return ok.sort(Bun.semver.order).at(-1) ?? null;
}

function requested(app: AppContext): RuntimeRequest | null {
  const engines = app.readJson<PackageJson>("package.json")?.engines?.node;
  if (engines?.trim()) return { constraint: engines.trim(), from: "package.json engines.node" };
  for (const f of [".nvmrc", ".node-version"]) {
    const v = app.read(f)?.trim().replace(/^v/, "");
    if (v) return { constraint: v, from: f };
  }
  return null;
}

/** The web process follows package.json: `npm start`, else its main file, else a usual name. */
export default definePlugin({
  runtime: {
    request: requested,
    async resolve(req, { env }) {
      if (!/^[0-9xX*^~<>=.|\s-]+$/.test(req.constraint)) {
        throw new Error(
          `${JSON.stringify(req.constraint)} is not a version or range lightjail understands (give e.g. 22, 22.x or >=20)`,
        );
      }
      const pkg = nodePackage();
      const all = await versions(env, pkg);
      const majors = [...new Set(Object.keys(all).map((v) => Number(v.split(".")[0])))]
        .filter((m) => m >= OLDEST_MAJOR)
        .sort((a, b) => a - b);
      const version = highest(
        Object.keys(all).filter((v) => Number(v.split(".")[0]) >= OLDEST_MAJOR),
        req.constraint,
      );
      if (!version)
        throw new Error(`no Node.js release matches; offered: ${majors.join(", ")} (each major's latest)`);
      const node = all[version]!;
      // npm comes separately: the build's npm must match what this Node.js bundles (10 for 18+).
      const npmAll = await versions(env, "npm");
      const npmVersion = highest(Object.keys(npmAll), "^10");
      if (!npmVersion) throw new Error("the registry offers no npm 10");
      const npm = npmAll[npmVersion]!;
      return {
        version,
        downloads: [
          { name: "node.tgz", url: node.dist.tarball, integrity: node.dist.integrity },
          { name: "npm.tgz", url: npm.dist.tarball, integrity: npm.dist.integrity },
        ],
        env: { LJ_NPM_VERSION: npmVersion },
      };
    },
  },
  plan(app, draft) {
    const pkg = app.readJson<PackageJson>("package.json") ?? {};
    const start = pkg.scripts?.start;
    if (start) draft.processes.web = { command: start };
    else {
      const main = [pkg.main, "server.js", "index.js", "app.js"].find((f) => f && app.exists(f));
      if (main) draft.processes.web = { command: `node ${main}` };
    }
    // A requested version lives in its own overlay under /opt/lj/node, ahead of the world's.
    if (draft.runtime) {
      draft.env.PATH =
        "/app/node_modules/.bin:/opt/lj/node/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    }
    return draft;
  },
});
