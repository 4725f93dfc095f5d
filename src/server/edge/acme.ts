/**
 * A small ACME client (RFC 8555) for the edge: an account (ES256, its key kept by the caller)
 * and certificates for one domain at a time over HTTP-01. The caller serves the challenge
 * responses (`challenges`) on port 80. WebCrypto does the keys and signatures; the CSR's DER is
 * written here (a handful of fixed structures, not a general ASN.1 encoder).
 */
import { LjError } from "../../errors.ts";

interface JsonWebKey {
  kty?: string;
  crv?: string;
  x?: string;
  y?: string;
}

export interface AcmeOptions {
  /** Directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory. */
  directory: string;
  email?: string;
  /** PEM of a CA to trust for the ACME server itself (a private CA, Pebble in tests). */
  ca?: string;
  /** Account key as PKCS#8 PEM; created (and handed to saveAccountKey) when absent. */
  accountKey?: string;
  saveAccountKey?(pem: string): void;
  /** Where the HTTP-01 responses are published: token -> key authorisation. */
  challenges: Map<string, string>;
  /** Progress lines (for the server's log). */
  log?(line: string): void;
  /** Gives up on one domain after this long; default 3 minutes. */
  timeoutMs?: number;
}

export interface Issued {
  certPem: string;
  keyPem: string;
}

// base64url, PEM ---------------------------------------------------------------------------------

const b64u = (b: Uint8Array | ArrayBuffer) => Buffer.from(b as ArrayBuffer).toString("base64url");
const b64uText = (s: string) => Buffer.from(s).toString("base64url");

export function toPem(label: string, der: ArrayBuffer | Uint8Array): string {
  const b64 = Buffer.from(der as ArrayBuffer).toString("base64");
  return `-----BEGIN ${label}-----\n${b64.replace(/.{1,64}/g, "$&\n")}-----END ${label}-----\n`;
}

function fromPem(pem: string): Uint8Array {
  return new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64"));
}

// DER ------------------------------------------------------------------------------------------------

function derLen(n: number): number[] {
  if (n < 0x80) return [n];
  const out: number[] = [];
  for (let v = n; v > 0; v >>= 8) out.unshift(v & 0xff);
  return [0x80 | out.length, ...out];
}

const tlv = (tag: number, ...parts: Uint8Array[]): Uint8Array => {
  const body = Buffer.concat(parts);
  return new Uint8Array(Buffer.concat([new Uint8Array([tag, ...derLen(body.length)]), body]));
};
const seq = (...p: Uint8Array[]) => tlv(0x30, ...p);
const set = (...p: Uint8Array[]) => tlv(0x31, ...p);

function oid(dotted: string): Uint8Array {
  const arcs = dotted.split(".").map(Number);
  const out = [40 * arcs[0]! + arcs[1]!];
  for (const a of arcs.slice(2)) {
    const b: number[] = [a & 0x7f];
    for (let v = a >> 7; v > 0; v >>= 7) b.unshift((v & 0x7f) | 0x80);
    out.push(...b);
  }
  return tlv(0x06, new Uint8Array(out));
}

/** A non-negative INTEGER from big-endian bytes (leading zeros dropped, a 0 added for the sign). */
function uint(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const b = bytes.subarray(i);
  return tlv(0x02, b[0]! & 0x80 ? new Uint8Array([0, ...b]) : b);
}

/** PKCS#10 request for one DNS name, signed with the certificate's P-256 key. */
async function csr(domain: string, keys: CryptoKeyPair): Promise<Uint8Array> {
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
  const enc = new TextEncoder();
  const subject = domain.length <= 64 ? seq(set(seq(oid("2.5.4.3"), tlv(0x0c, enc.encode(domain))))) : seq();
  const san = seq(oid("2.5.29.17"), tlv(0x04, seq(tlv(0x82, enc.encode(domain)))));
  const extReq = seq(oid("1.2.840.113549.1.9.14"), set(seq(san)));
  const info = seq(uint(new Uint8Array([0])), subject, spki, tlv(0xa0, extReq));
  const raw = new Uint8Array(
    await crypto.subtle.sign(
      { name: "ECDSA", hash: "SHA-256" },
      keys.privateKey,
      info as unknown as ArrayBuffer,
    ),
  );
  const sig = seq(uint(raw.subarray(0, 32)), uint(raw.subarray(32)));
  return seq(info, seq(oid("1.2.840.10045.4.3.2")), tlv(0x03, new Uint8Array([0]), sig));
}

const EC = { name: "ECDSA", namedCurve: "P-256" } as const;

export async function newKeyPem(): Promise<string> {
  const k = await crypto.subtle.generateKey(EC, true, ["sign", "verify"]);
  return toPem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", k.privateKey));
}

async function importKey(pem: string): Promise<{ priv: CryptoKey; jwk: JsonWebKey }> {
  const priv = await crypto.subtle.importKey("pkcs8", fromPem(pem) as unknown as ArrayBuffer, EC, true, [
    "sign",
  ]);
  const full = await crypto.subtle.exportKey("jwk", priv);
  return { priv, jwk: { kty: "EC", crv: "P-256", x: full.x, y: full.y } };
}

// The protocol ---------------------------------------------------------------------------------------

interface Directory {
  newNonce: string;
  newAccount: string;
  newOrder: string;
}

interface AcmeResponse {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
  text: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function acmeError(what: string, r: AcmeResponse): LjError {
  const detail = (r.body.detail as string | undefined) ?? r.text.slice(0, 300);
  return new LjError("unavailable", "acme-failed", `ACME ${what}: HTTP ${r.status}: ${detail}`, {
    hint: "check that the domain resolves to this server and that port 80 reaches lj serve",
  });
}

export class AcmeClient {
  private dir: Directory | null = null;
  private nonce: string | null = null;
  private key: { priv: CryptoKey; jwk: JsonWebKey } | null = null;
  private kid: string | null = null;

  constructor(private readonly o: AcmeOptions) {}

  private async http(url: string, init: RequestInit = {}): Promise<AcmeResponse> {
    const res = await fetch(url, {
      ...init,
      ...(this.o.ca ? { tls: { ca: this.o.ca } } : {}),
    } as RequestInit);
    const nonce = res.headers.get("replay-nonce");
    if (nonce) this.nonce = nonce;
    const text = await res.text();
    let body: Record<string, unknown> = {};
    if ((res.headers.get("content-type") ?? "").includes("json")) {
      try {
        body = JSON.parse(text);
      } catch {}
    }
    return { status: res.status, headers: res.headers, body, text };
  }

  private async directory(): Promise<Directory> {
    if (!this.dir) {
      const r = await this.http(this.o.directory);
      if (r.status !== 200 || typeof r.body.newOrder !== "string") throw acmeError("directory", r);
      this.dir = r.body as unknown as Directory;
    }
    return this.dir;
  }

  private async thumbprint(): Promise<string> {
    const { jwk } = await this.account();
    const canon = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
    return b64u(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(canon)));
  }

  /** A signed POST (payload null: POST-as-GET); a refused nonce is retried with a fresh one. */
  private async post(url: string, payload: unknown, useJwk = false): Promise<AcmeResponse> {
    const dir = await this.directory();
    const key = this.key!;
    for (let attempt = 0; ; attempt++) {
      if (!this.nonce) await this.http(dir.newNonce, { method: "HEAD" });
      const header = {
        alg: "ES256",
        nonce: this.nonce,
        url,
        ...(useJwk ? { jwk: key.jwk } : { kid: this.kid }),
      };
      this.nonce = null;
      const prot = b64uText(JSON.stringify(header));
      const pay = payload === null ? "" : b64uText(JSON.stringify(payload));
      const sig = await crypto.subtle.sign(
        { name: "ECDSA", hash: "SHA-256" },
        key.priv,
        new TextEncoder().encode(`${prot}.${pay}`),
      );
      const r = await this.http(url, {
        method: "POST",
        headers: { "content-type": "application/jose+json" },
        body: JSON.stringify({ protected: prot, payload: pay, signature: b64u(sig) }),
      });
      if (r.status === 400 && r.body.type === "urn:ietf:params:acme:error:badNonce" && attempt < 5) continue;
      return r;
    }
  }

  private async account(): Promise<{ priv: CryptoKey; jwk: JsonWebKey }> {
    if (this.key) return this.key;
    let pem = this.o.accountKey;
    if (!pem) {
      pem = await newKeyPem();
      this.o.saveAccountKey?.(pem);
    }
    this.key = await importKey(pem);
    return this.key;
  }

  private async register(): Promise<void> {
    if (this.kid) return;
    await this.account();
    const dir = await this.directory();
    const r = await this.post(
      dir.newAccount,
      {
        termsOfServiceAgreed: true,
        ...(this.o.email ? { contact: [`mailto:${this.o.email}`] } : {}),
      },
      true,
    );
    const loc = r.headers.get("location");
    if ((r.status !== 200 && r.status !== 201) || !loc) throw acmeError("account", r);
    this.kid = loc;
  }

  /** Polls an authorisation or order until it leaves the pending/processing states. */
  private async poll(url: string, what: string, deadline: number): Promise<AcmeResponse> {
    for (;;) {
      const r = await this.post(url, null);
      if (r.status !== 200) throw acmeError(what, r);
      const st = r.body.status;
      if (st !== "pending" && st !== "processing") return r;
      if (Date.now() > deadline) throw acmeError(`${what} timed out`, r);
      const after = Number(r.headers.get("retry-after"));
      await sleep(Math.min(Number.isFinite(after) && after > 0 ? after * 1000 : 1000, 5000));
    }
  }

  /** A certificate (chain PEM) and its new private key for `domain`. */
  async issue(domain: string): Promise<Issued> {
    const deadline = Date.now() + (this.o.timeoutMs ?? 180_000);
    await this.register();
    const dir = await this.directory();
    const order = await this.post(dir.newOrder, { identifiers: [{ type: "dns", value: domain }] });
    const orderUrl = order.headers.get("location");
    if (order.status !== 201 || !orderUrl) throw acmeError("new order", order);
    const thumb = await this.thumbprint();
    const published: string[] = [];
    try {
      for (const authzUrl of order.body.authorizations as string[]) {
        const authz = await this.post(authzUrl, null);
        if (authz.status !== 200) throw acmeError("authorisation", authz);
        if (authz.body.status === "valid") continue;
        const ch = (authz.body.challenges as { type: string; url: string; token: string }[]).find(
          (c) => c.type === "http-01",
        );
        if (!ch) throw acmeError("authorisation (the CA offers no http-01 challenge)", authz);
        this.o.challenges.set(ch.token, `${ch.token}.${thumb}`);
        published.push(ch.token);
        this.o.log?.(`acme: ${domain}: answering the http-01 challenge`);
        const ready = await this.post(ch.url, {});
        if (ready.status !== 200) throw acmeError("challenge", ready);
        const done = await this.poll(authzUrl, "authorisation", deadline);
        if (done.body.status !== "valid") {
          const errs = (done.body.challenges as { error?: { detail?: string } }[])
            .map((c) => c.error?.detail)
            .filter(Boolean);
          throw acmeError(`validation of ${domain} (${errs.join("; ") || done.body.status})`, done);
        }
      }
    } finally {
      for (const t of published) this.o.challenges.delete(t);
    }
    const keyPem = await newKeyPem();
    const keys = {
      privateKey: (await importKey(keyPem)).priv,
      publicKey: await publicOf(keyPem),
    } as CryptoKeyPair;
    const fin = await this.post(order.body.finalize as string, { csr: b64u(await csr(domain, keys)) });
    if (fin.status !== 200) throw acmeError("finalize", fin);
    const final = await this.poll(orderUrl, "order", deadline);
    if (final.body.status !== "valid" || typeof final.body.certificate !== "string")
      throw acmeError(`order ended ${final.body.status}`, final);
    const cert = await this.post(final.body.certificate, null);
    if (cert.status !== 200 || !cert.text.includes("BEGIN CERTIFICATE")) throw acmeError("certificate", cert);
    return { certPem: cert.text, keyPem };
  }
}

async function publicOf(pem: string): Promise<CryptoKey> {
  const priv = await crypto.subtle.importKey("pkcs8", fromPem(pem) as unknown as ArrayBuffer, EC, true, [
    "sign",
  ]);
  const jwk = await crypto.subtle.exportKey("jwk", priv);
  return crypto.subtle.importKey("jwk", { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y }, EC, true, [
    "verify",
  ]);
}
