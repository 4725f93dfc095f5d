/**
 * The original lightjail's Jailfile, accepted as an overlay recipe: directives, one per line,
 * then the install script from its `#!` line to the end.
 *
 *   name ruby
 *   version 3.1.0
 *   type language            (extension; default: the --type given, else "language")
 *   world bookworm           (default world for the build)
 *   from language/base@^1    (repeatable)
 *   copy files/gemrc /etc/gemrc   (plugin-relative source -> absolute path in the overlay)
 *   #!/bin/sh
 *   apt-get install -y ruby
 */
import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import { LjError } from "../errors.ts";
import { INSTALL_DEFAULTS, type Manifest, NAME_RE, parseParent, TYPE_RE, VERSION_RE } from "./manifest.ts";

export interface JailfileManifest extends Manifest {
  world?: string;
  /** The inline install script (from the #! line on). */
  inlineScript: string;
}

const DIRECTIVES = ["name", "version", "type", "world", "from", "copy", "description"];

export function parseJailfile(text: string, file: string, opts: { type?: string } = {}): JailfileManifest {
  const lines = text.split("\n");
  const fail = (line: number, msg: string): never => {
    throw new LjError("config", "invalid-jailfile", `${file}:${line}: ${msg}`, {
      hint: `directives: ${DIRECTIVES.join(", ")}; then the install script from its #! line`,
    });
  };
  const seen = new Map<string, number>();
  const vals: Record<string, string> = {};
  const from: Manifest["from"] = [];
  const copy: Manifest["copy"] = [];
  let scriptStart = -1;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i] ?? "";
    const n = i + 1;
    if (raw.startsWith("#!")) {
      scriptStart = i;
      break;
    }
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^(\S+)\s*(.*)$/.exec(line);
    const dir = m?.[1] ?? "";
    const arg = (m?.[2] ?? "").trim();
    if (!DIRECTIVES.includes(dir))
      fail(
        n,
        `unknown directive "${dir}": expected one of ${DIRECTIVES.join(", ")}, or the script's #! line`,
      );
    if (arg === "") fail(n, `directive "${dir}" needs a value`);
    if (dir === "from") {
      const p = parseParent(arg, vals.type ?? opts.type ?? "language");
      if (typeof p === "string") fail(n, `from: expected ${p}`);
      else from.push(p);
      continue;
    }
    if (dir === "copy") {
      const parts = arg.split(/\s+/);
      const [src, dst] = parts;
      if (parts.length !== 2 || !src || !dst) fail(n, "copy: expected SOURCE DESTINATION (two paths)");
      else {
        if (src.startsWith("/") || src.split("/").includes(".."))
          fail(n, `copy: the source must be inside the Jailfile's directory, not "${src}"`);
        if (!dst.startsWith("/") || dst.split("/").includes(".."))
          fail(n, `copy: the destination must be an absolute path without .., not "${dst}"`);
        copy.push({ src, dst });
      }
      continue;
    }
    if (seen.has(dir)) fail(n, `directive "${dir}" given twice (first on line ${seen.get(dir)})`);
    seen.set(dir, n);
    vals[dir] = arg;
  }
  const lineOf = (d: string) => seen.get(d) ?? 1;
  if (!vals.name) fail(1, 'missing directive "name" (e.g. `name ruby`)');
  if (!NAME_RE.test(vals.name!))
    fail(lineOf("name"), `name: expected a lowercase name ([a-z0-9_-]), got "${vals.name}"`);
  if (!vals.version) fail(1, 'missing directive "version" (e.g. `version 1.0.0`)');
  if (!VERSION_RE.test(vals.version!))
    fail(lineOf("version"), `version: expected a semantic version like 1.0.0, got "${vals.version}"`);
  const type = vals.type ?? opts.type ?? "language";
  if (!TYPE_RE.test(type)) fail(lineOf("type"), `type: expected a lowercase singular type, got "${type}"`);
  if (vals.world !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(vals.world))
    fail(lineOf("world"), `world: expected a world name, got "${vals.world}"`);
  if (scriptStart < 0)
    fail(
      lines.length,
      "no install script: expected a line starting with #! (e.g. #!/bin/sh) after the directives",
    );
  const inlineScript = lines.slice(scriptStart).join("\n");
  return {
    name: vals.name!,
    type,
    version: vals.version!,
    description: vals.description ?? "",
    from,
    install: { net: "egress", ...INSTALL_DEFAULTS, env: {} },
    detect: null,
    build: null,
    processes: {},
    env: {},
    service: null,
    copy,
    file,
    dir: dirname(file),
    ...(vals.world !== undefined ? { world: vals.world } : {}),
    inlineScript,
  };
}

export function loadJailfile(file: string, opts: { type?: string } = {}): JailfileManifest {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    throw new LjError("not-found", "jailfile-missing", `no Jailfile: ${file} cannot be read`, {
      hint: "ljbuild [Jailfile] builds the Jailfile in the current directory by default",
    });
  }
  return parseJailfile(text, file, opts);
}
