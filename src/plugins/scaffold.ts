/**
 * `lj plugins new --type TYPE NAME`: a working plugin to start from, with a test app fixture
 * (languages) so `lj plan` and `lj build-app` work on it at once.
 */
import * as fsp from "node:fs/promises";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { NAME_RE, TYPE_RE } from "./manifest.ts";

export function scaffoldFiles(type: string, name: string): Record<string, string> {
  const files: Record<string, string> = {};
  const head = `name = "${name}"
type = "${type}"
version = "0.1.0"
description = "TODO: say what ${name} provides"
# Parent overlays, built first and stacked beneath this one: ["language/node@^1"]
from = []

[install]
# Runs as root in a jail over the world (+ parents); what it writes becomes the overlay.
script = "install.sh"
net = "egress"
memory_mb = 2048
cpus = 2
`;
  files["install.sh"] = `#!/bin/sh
# Builds the ${name} overlay. Runs as root in a jail; the plugin directory is mounted
# read-only at $LJ_PLUGIN_DIR. On a Debian world: apt-get install -y --no-install-recommends PKG
set -eu
echo "installing ${name} $LJ_OVERLAY_VERSION on world $LJ_WORLD"
mkdir -p /opt/${name}
echo "${name} $LJ_OVERLAY_VERSION" > /opt/${name}/VERSION
`;
  if (type === "service") {
    files["plugin.toml"] = `${head}
[service]
# The command (installed by install.sh) that runs the service in the foreground.
start = "/opt/${name}/start"
port = 8000
data_dir = "/var/lib/${name}"

[service.health]
# Run after the port opens, in a fresh jail that reaches the service at $HOST:$PORT.
command = "/opt/${name}/ready"
interval_s = 0.5
timeout_s = 30

[service.env]
# What an app linked to this service receives.
${name.toUpperCase().replace(/-/g, "_")}_URL = "http://\${HOST}:\${PORT}"
`;
    files["install.sh"] += `cat > /opt/${name}/start <<'SH'
#!/bin/sh
# TODO: exec the real server here, listening on $PORT and keeping state in $DATA_DIR.
exec sleep 2147483647
SH
cat > /opt/${name}/ready <<'SH'
#!/bin/sh
# Exits 0 once the server at $HOST:$PORT answers. TODO: ask the real server (a ping, a query).
exec timeout 2 bash -c ': < "/dev/tcp/$HOST/$PORT"' 2>/dev/null
SH
chmod 755 /opt/${name}/start /opt/${name}/ready
`;
  } else if (type === "language") {
    files["plugin.toml"] = `${head}
[detect]
# Any of these globs present in the app selects the plugin; index.ts may refine it.
files = ["${name}.txt"]
priority = 10

[build]
script = "build.sh"
# App-relative directories kept between builds, keyed by the first lockfile found.
cache = [".${name}-cache"]
lockfiles = ["${name}.lock"]

[processes]
web = "sh serve.sh"

[env]
${name.toUpperCase().replace(/-/g, "_")}_HOME = "/opt/${name}"
`;
    files["build.sh"] = `#!/bin/sh
# Builds the app in /app (the current directory). LJ_CACHE_HIT=1 when the cached directories
# were restored because the lockfile is unchanged; $LJ_CACHE_DIR persists between builds.
set -eu
if [ "$LJ_CACHE_HIT" = 1 ]; then
  echo "dependencies restored from the cache"
else
  mkdir -p .${name}-cache && cat ${name}.lock > .${name}-cache/deps 2>/dev/null || true
fi
cat /opt/${name}/VERSION > built.txt
echo "built: $(cat built.txt)"
`;
    files["index.ts"] = `import { definePlugin } from "lightjail/plugin";

/** Hooks for what the manifest cannot say; delete the ones you do not need. */
export default definePlugin({
  detect(app, manifestMatch) {
    // The manifest's [detect] rules already ran; add a reason (or return null to refuse).
    if (!manifestMatch) return null;
    return { reasons: [...manifestMatch.reasons, "${name} scaffold"] };
  },
  plan(app, draft) {
    draft.env.GREETING ??= app.read("${name}.txt")?.trim() ?? "hello";
    return draft;
  },
});
`;
    files[`test/app/${name}.txt`] = "hello from the test app\n";
    files[`test/app/${name}.lock`] = "deps 1\n";
    files["test/app/serve.sh"] = `# TODO: serve the app on $PORT. This sample needs python3 in the world.
exec python3 -m http.server "$PORT"
`;
  } else {
    files["plugin.toml"] = `${head}
[env]
`;
  }
  files["README.md"] = `# ${name} (${type})

Scaffolded by \`lj plugins new\`. Build it with \`lj build --type ${type} ${name}\`${
    type === "language"
      ? `, try it with
\`lj plan test/app\` and \`lj build-app test/app --app ${name}-test\``
      : ""
  }. See docs/plugins.md.
`;
  return files;
}

export async function scaffold(dir: string, type: string, name: string): Promise<string[]> {
  if (!TYPE_RE.test(type))
    throw new LjError("usage", "bad-type", `invalid type ${JSON.stringify(type)}`, {
      hint: "lowercase and singular, e.g. language, service, tool",
    });
  if (!NAME_RE.test(name))
    throw new LjError("usage", "bad-plugin-name", `invalid plugin name ${JSON.stringify(name)}`, {
      hint: "lowercase letters, digits, '-' and '_'",
    });
  try {
    await fsp.access(dir);
    throw new LjError("conflict", "plugin-exists", `${dir} already exists`, {
      hint: "pick another name or remove it",
    });
  } catch (e) {
    if (e instanceof LjError) throw e;
  }
  const files = scaffoldFiles(type, name);
  const tmp = `${dir}.tmp-${process.pid}`;
  for (const [rel, text] of Object.entries(files)) {
    await fsp.mkdir(join(tmp, rel, ".."), { recursive: true });
    await fsp.writeFile(join(tmp, rel), text, { mode: rel.endsWith(".sh") ? 0o755 : 0o644 });
  }
  await fsp.rename(tmp, dir);
  return Object.keys(files).sort();
}
