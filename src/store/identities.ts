/**
 * Host identities. Every app and every service owns a range of host ids that nothing else on
 * the machine uses: its processes run as the range's first id, and its builds run as root in a
 * user namespace mapped onto the range, so what a tenant's build writes belongs to the tenant on
 * the host, and per-user kernel limits (inotify instances, RLIMIT_NPROC, keyrings) count each
 * tenant apart. Overlay builds (plugins' install scripts) share one range of their own.
 *
 * Ranges are allocated once per name and recorded in `ids/ids.db` under the state root, so an app
 * keeps its ids across restarts and redeploys (its slugs and caches stay its own). Each state
 * root draws from a region of its own, chosen from the root's path, so two roots on one
 * machine do not hand out the same ids (`LJ_ID_REGION` picks the region explicitly).
 */
import { Database } from "bun:sqlite";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, realpathSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { paths } from "./paths.ts";

/** Ids per range: a user namespace maps root (0) to nobody (65534) and everything between. */
export const ID_COUNT = 65536;
/** The first host id lightjail hands out: far above login users and the usual subuid ranges. */
const FIRST_ID = 0x40000000;
/** Ranges per region, and regions: ids stay below 2^31 (tools that treat uids as signed). */
const RANGES_PER_REGION = 1024;
const REGIONS = (0x80000000 - FIRST_ID) / (RANGES_PER_REGION * ID_COUNT);

export type IdentityKind = "app" | "service" | "builder";

export interface Identity {
  kind: IdentityKind;
  name: string;
  /** Host uid and gid of the range's first id: the processes' ids, root inside a namespace. */
  uid: number;
  gid: number;
  count: number;
}

/** The one identity overlay builds run as. */
export const OVERLAY_BUILDER = "overlays";

const dbs = new Map<string, Database>();

function open(): Database {
  const dir = join(paths.root(), "ids");
  const file = join(dir, "ids.db");
  let db = dbs.get(file);
  if (db) return db;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  db = new Database(file, { create: true });
  db.exec("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000");
  db.exec(
    "CREATE TABLE IF NOT EXISTS identities (kind TEXT NOT NULL, name TEXT NOT NULL, slot INTEGER NOT NULL UNIQUE, PRIMARY KEY (kind, name))",
  );
  dbs.set(file, db);
  return db;
}

/** This root's region: LJ_ID_REGION, else one derived from the root's real path. */
export function idRegion(env: Record<string, string | undefined> = process.env): number {
  const v = env.LJ_ID_REGION;
  if (v !== undefined && v !== "") {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n >= REGIONS) {
      throw new LjError(
        "config",
        "bad-id-region",
        `LJ_ID_REGION must be an integer from 0 to ${REGIONS - 1}`,
      );
    }
    return n;
  }
  let root = paths.root();
  try {
    root = realpathSync(root);
  } catch {}
  return createHash("sha256").update(root).digest().readUInt32BE(0) % REGIONS;
}

function toIdentity(kind: IdentityKind, name: string, slot: number): Identity {
  const base = FIRST_ID + (idRegion() * RANGES_PER_REGION + slot) * ID_COUNT;
  return { kind, name, uid: base, gid: base, count: ID_COUNT };
}

/** The identity of an app, a service or the overlay builder: allocated on first use. */
export function identityOf(kind: IdentityKind, name: string): Identity {
  const db = open();
  const find = db.query<{ slot: number }, [string, string]>(
    "SELECT slot FROM identities WHERE kind = ? AND name = ?",
  );
  const found = find.get(kind, name);
  if (found) return toIdentity(kind, name, found.slot);
  const slot = db
    .transaction(() => {
      const again = find.get(kind, name);
      if (again) return again.slot;
      // The lowest free slot, so the ids of removed names are used again.
      const used = db.query<{ slot: number }, []>("SELECT slot FROM identities ORDER BY slot").all();
      let s = 0;
      for (const u of used) {
        if (u.slot !== s) break;
        s++;
      }
      if (s >= RANGES_PER_REGION) {
        throw new LjError(
          "unavailable",
          "ids-exhausted",
          `all ${RANGES_PER_REGION} id ranges of this state root are in use`,
          {
            hint: "remove apps or services you no longer need",
          },
        );
      }
      db.query("INSERT INTO identities (kind, name, slot) VALUES (?, ?, ?)").run(kind, name, s);
      return s;
    })
    .immediate();
  return toIdentity(kind, name, slot);
}

/** Gives a removed app's or service's range back (its files must be gone first). */
export function forgetIdentity(kind: IdentityKind, name: string): void {
  open().query("DELETE FROM identities WHERE kind = ? AND name = ?").run(kind, name);
}

const etcDone = new Set<string>();

/**
 * /etc/passwd and /etc/group for a jail that runs as an identity's first id: the world's own
 * with an entry for that id added (initdb, ssh, git and others look their user up), written
 * once per world and identity under ids/etc/ and bound read-only over the world's files.
 */
export function identityEtc(
  worldDir: string,
  who: Identity,
  home: string,
): { src: string; dst: string; readonly: boolean }[] {
  const key = createHash("sha256").update(worldDir).digest("hex").slice(0, 12);
  const dir = join(paths.root(), "ids", "etc", `${key}-${who.uid}`);
  const user = who.kind === "app" ? "app" : who.kind === "service" ? "service" : "builder";
  if (!etcDone.has(dir)) {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    const read = (f: string) => {
      try {
        const t = readFileSync(join(worldDir, "etc", f), "utf8");
        return t.endsWith("\n") || t === "" ? t : `${t}\n`;
      } catch {
        return "";
      }
    };
    writeAtomically(
      join(dir, "passwd"),
      `${read("passwd")}${user}:x:${who.uid}:${who.gid}::${home}:/bin/sh\n`,
    );
    writeAtomically(join(dir, "group"), `${read("group")}${user}:x:${who.gid}:\n`);
    etcDone.add(dir);
  }
  return [
    { src: join(dir, "passwd"), dst: "/etc/passwd", readonly: true },
    { src: join(dir, "group"), dst: "/etc/group", readonly: true },
  ];
}

/** A new file in place of the old: jails that bound the old one keep what they saw. */
function writeAtomically(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, file);
}
