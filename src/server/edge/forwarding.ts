/**
 * The forwarding headers the router gives an app: X-Forwarded-For, X-Forwarded-Proto,
 * X-Forwarded-Host, X-Real-IP and Forwarded (RFC 7239). The router sets them itself from the
 * TCP peer: whatever a client sent under those names is dropped, so an app can believe them.
 * Only when the peer is a configured trusted proxy (a load balancer in front of lj serve) is
 * the chain it sent kept, with the peer appended; X-Real-IP is then the rightmost address of
 * the chain that is not itself a trusted proxy.
 */
import { readFileSync } from "node:fs";
import { LjError } from "../../errors.ts";
import { paths } from "../../store/paths.ts";

/** Client values of these never reach an app unless the peer is a trusted proxy. */
export const FORWARDING_HEADERS = [
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-forwarded-port",
  "x-real-ip",
  "forwarded",
] as const;

// IP addresses and CIDRs ------------------------------------------------------------------------

/** 4 bytes for IPv4 (IPv4-mapped IPv6 included), 16 for IPv6; null when not an address. */
export function ipBytes(text: string): Uint8Array | null {
  const s = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const v4 = parseV4(s);
  if (v4) return v4;
  const v6 = parseV6(s);
  if (!v6) return null;
  const mapped = v6.subarray(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff;
  return mapped ? v6.slice(12) : v6;
}

function parseV4(s: string): Uint8Array | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return null;
    out[i] = Number(p);
  }
  return out;
}

function parseV6(s: string): Uint8Array | null {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || s.length > 45) return null;
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (h: string): number[] | null => {
    if (h === "") return [];
    const out: number[] = [];
    const parts = h.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseV4(p);
        if (!v4) return null;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) out.push(Number.parseInt(p, 16));
      else return null;
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return null;
  const fill = 8 - head.length - tail.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) return null;
  const all = [...head, ...new Array<number>(fill).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** The text form used in the headers: IPv4-mapped IPv6 peers shown as IPv4. */
export function ipText(address: string): string {
  return address.toLowerCase().startsWith("::ffff:") && parseV4(address.slice(7))
    ? address.slice(7)
    : address;
}

interface Cidr {
  bytes: Uint8Array;
  prefix: number;
}

/** A set of CIDRs (ADDR or ADDR/PREFIX, IPv4 or IPv6); `source` names where they came from. */
export class TrustedProxies {
  private readonly nets: Cidr[];

  constructor(
    readonly list: readonly string[],
    source = "--trusted-proxy",
  ) {
    this.nets = list.map((c) => parseCidr(c, source));
  }

  get empty(): boolean {
    return this.nets.length === 0;
  }

  has(address: string): boolean {
    if (this.nets.length === 0) return false;
    const ip = ipBytes(address);
    return ip !== null && this.nets.some((n) => inCidr(ip, n));
  }
}

function parseCidr(text: string, source: string): Cidr {
  const [addr, p, extra] = text.trim().split("/");
  const bytes = addr === undefined ? null : ipBytes(addr);
  const max = bytes ? bytes.length * 8 : 0;
  const prefix = p === undefined ? max : /^[0-9]{1,3}$/.test(p) ? Number(p) : -1;
  if (!bytes || extra !== undefined || prefix < 0 || prefix > max) {
    throw new LjError("usage", "bad-trusted-proxy", `${source}: "${text}" is not an address or CIDR`, {
      hint: "give ADDR or ADDR/PREFIX, IPv4 or IPv6, e.g. 10.0.0.0/8 or fd00::/8",
    });
  }
  return { bytes, prefix };
}

function inCidr(ip: Uint8Array, n: Cidr): boolean {
  if (ip.length !== n.bytes.length) return false;
  let bits = n.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((ip[i]! & mask) !== (n.bytes[i]! & mask)) return false;
  }
  return true;
}

/**
 * The trusted proxies: LJ_TRUSTED_PROXIES (comma separated) wins over `trusted_proxies` under
 * [router] in $LIGHTJAIL_ROOT/config.toml; none by default. `lj serve --trusted-proxy` wins over both.
 */
export function trustedProxiesFromConfig(
  env: Record<string, string | undefined> = process.env,
  file = paths.config(),
): TrustedProxies {
  if (env.LJ_TRUSTED_PROXIES !== undefined) {
    return new TrustedProxies(splitList(env.LJ_TRUSTED_PROXIES), "LJ_TRUSTED_PROXIES");
  }
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return new TrustedProxies([]);
  }
  let doc: { router?: { trusted_proxies?: unknown } };
  try {
    doc = Bun.TOML.parse(text) as typeof doc;
  } catch (e) {
    throw new LjError("config", "bad-config", `cannot parse ${file}: ${(e as Error).message}`);
  }
  const v = doc.router?.trusted_proxies;
  if (v === undefined) return new TrustedProxies([]);
  const source = `[router] trusted_proxies in ${file}`;
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string"))
    throw new LjError("config", "bad-config", `${source} must be a list of CIDR strings`);
  try {
    return new TrustedProxies(v, source);
  } catch (e) {
    throw new LjError("config", "bad-config", (e as Error).message, { hint: (e as LjError).hint });
  }
}

export const splitList = (s: string) =>
  s
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);

// The headers --------------------------------------------------------------------------------------

/** RFC 7239 node: IPv6 in brackets and quoted (":" is not a token character). */
function forwardedNode(ip: string): string {
  return ip.includes(":") ? `"[${ip}]"` : ip;
}

/** RFC 7230 token, else a quoted string with `"` and `\` escaped. */
function forwardedValue(v: string): string {
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/**
 * What the app gets for a request from `peer`: the values to set. Callers drop every
 * FORWARDING_HEADERS name the client sent first, then set these (`prior` is the client's
 * header values, read before dropping, used only when the peer is trusted).
 */
export function forwardingHeaders(
  peer: string | undefined,
  proto: "http" | "https",
  host: string,
  trusted: TrustedProxies,
  prior: (name: string) => string | null,
): Record<string, string> {
  if (!peer) return { "x-forwarded-proto": proto, "x-forwarded-host": host };
  const ip = ipText(peer);
  const own = `for=${forwardedNode(ip)};proto=${proto}${host ? `;host=${forwardedValue(host)}` : ""}`;
  if (!trusted.has(ip)) {
    return {
      "x-forwarded-for": ip,
      "x-forwarded-proto": proto,
      "x-forwarded-host": host,
      "x-real-ip": ip,
      forwarded: own,
    };
  }
  const xff = prior("x-forwarded-for");
  const chain = xff ? `${xff}, ${ip}` : ip;
  const fwd = prior("forwarded");
  const out: Record<string, string> = {
    "x-forwarded-for": chain,
    // The proxy terminated the client's connection: its scheme and host are the client's.
    "x-forwarded-proto": prior("x-forwarded-proto") ?? proto,
    "x-forwarded-host": prior("x-forwarded-host") ?? host,
    "x-real-ip": realClient(chain, trusted),
    forwarded: fwd ? `${fwd}, ${own}` : own,
  };
  const port = prior("x-forwarded-port");
  if (port) out["x-forwarded-port"] = port;
  return out;
}

/**
 * The client behind a chain of trusted proxies: walking from the right, the first address that
 * is not a trusted proxy (the nearest hop nobody we trust vouches beyond). An element that is
 * not an address ends the walk at the hop after it.
 */
function realClient(chain: string, trusted: TrustedProxies): string {
  const hops = chain.split(",").map((h) => h.trim());
  let last = hops[hops.length - 1]!;
  for (let i = hops.length - 1; i >= 0; i--) {
    const h = ipText(hops[i]!.replace(/^\[|\]$/g, ""));
    if (ipBytes(h) === null) return last;
    if (!trusted.has(h)) return h;
    last = h;
  }
  return last;
}
