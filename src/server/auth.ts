/**
 * The API token: made on the server's first start, stored mode 0600 under the root, shown
 * once. Requests carry it as `Authorization: Bearer TOKEN`; git clients as the password of
 * HTTP Basic auth (any user name).
 */
import { timingSafeEqual } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { paths } from "../store/paths.ts";

export function loadOrCreateToken(file = paths.paasToken()): { token: string; created: boolean } {
  if (existsSync(file)) return { token: readFileSync(file, "utf8").trim(), created: false };
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const token = `lj_${Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString("base64url")}`;
  writeFileSync(file, `${token}\n`, { mode: 0o600, flag: "wx" });
  return { token, created: true };
}

/** The token a request presents (Bearer, or the password of Basic), or null. */
export function presentedToken(header: string | null | undefined): string | null {
  if (!header) return null;
  const [scheme, value] = header.split(" ", 2);
  if (!value) return null;
  if (scheme?.toLowerCase() === "bearer") return value.trim();
  if (scheme?.toLowerCase() === "basic") {
    const text = Buffer.from(value, "base64").toString("utf8");
    const colon = text.indexOf(":");
    return colon >= 0 ? text.slice(colon + 1) : null;
  }
  return null;
}

export function tokenMatches(presented: string | null, token: string): boolean {
  if (presented === null) return false;
  const a = Buffer.from(presented);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}
