/**
 * Certificates for the edge's HTTPS listener: kept under $LIGHTJAIL_ROOT/paas/certs (dir 0700,
 * DOMAIN.crt and DOMAIN.key 0600), obtained over ACME HTTP-01 for every custom domain and
 * renewed when a third of their life is left. One domain is worked on at a time; a failure is
 * logged and retried at the next round (every `checkEveryMs`), with no effect on the others.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { AcmeClient } from "./acme.ts";

export const LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory";

export interface Cert {
  cert: string;
  key: string;
  notBefore: number;
  notAfter: number;
}

export interface CertOptions {
  dir: string;
  /** The names that want a certificate (the custom domains). */
  wanted(): string[];
  acme?: { directory: string; email?: string; ca?: string };
  log(line: string): void;
  /** Called when the set of certificates changed (the edge reloads its TLS contexts). */
  onChange(): void;
  checkEveryMs?: number;
}

function writePrivate(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

/** A certificate and its own key (a pair that does not match is not a certificate to serve). */
function parse(certPem: string, keyPem: string): Cert | null {
  try {
    const x = new X509Certificate(certPem);
    if (!x.checkPrivateKey(createPrivateKey(keyPem))) return null;
    return {
      cert: certPem,
      key: keyPem,
      notBefore: Date.parse(x.validFrom),
      notAfter: Date.parse(x.validTo),
    };
  } catch {
    return null;
  }
}

export class CertManager {
  private certs = new Map<string, Cert>();
  /** HTTP-01 responses being served: token -> key authorisation. */
  readonly challenges = new Map<string, string>();
  private client: AcmeClient | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;

  constructor(private readonly o: CertOptions) {
    mkdirSync(o.dir, { recursive: true, mode: 0o700 });
    chmodSync(o.dir, 0o700);
    this.load();
    if (o.acme) {
      const keyFile = join(o.dir, "account.key");
      this.client = new AcmeClient({
        ...o.acme,
        accountKey: existsSync(keyFile) ? readFileSync(keyFile, "utf8") : undefined,
        saveAccountKey: (pem) => writePrivate(keyFile, pem),
        challenges: this.challenges,
        log: o.log,
      });
    }
  }

  /** Certificates already on disk (from earlier runs, or put there by the operator). */
  private load(): void {
    for (const f of readdirSync(this.o.dir)) {
      if (!f.endsWith(".crt")) continue;
      const name = f.slice(0, -4);
      try {
        const c = parse(
          readFileSync(join(this.o.dir, f), "utf8"),
          readFileSync(join(this.o.dir, `${name}.key`), "utf8"),
        );
        if (c) this.certs.set(name, c);
      } catch {}
    }
  }

  /** Where a name's certificate and key are kept (the nginx edge reads them there). */
  files(name: string): { cert: string; key: string } {
    return { cert: join(this.o.dir, `${name}.crt`), key: join(this.o.dir, `${name}.key`) };
  }

  get(name: string): Cert | null {
    const c = this.certs.get(name);
    return c && c.notAfter > Date.now() ? c : null;
  }

  /** Certificates in use: wanted names with a valid certificate. */
  active(): [string, Cert][] {
    const wanted = new Set(this.o.wanted());
    return [...this.certs].filter(([n, c]) => wanted.has(n) && c.notAfter > Date.now());
  }

  put(name: string, certPem: string, keyPem: string): void {
    const c = parse(certPem, keyPem);
    if (!c) throw new Error(`not a certificate for ${name} with its key`);
    writePrivate(join(this.o.dir, `${name}.key`), keyPem);
    writePrivate(join(this.o.dir, `${name}.crt`), certPem);
    this.certs.set(name, c);
  }

  private needsWork(name: string): boolean {
    const c = this.certs.get(name);
    if (!c) return true;
    // Renew with a third of the lifetime left (30 days of Let's Encrypt's 90).
    return Date.now() > c.notAfter - (c.notAfter - c.notBefore) / 3;
  }

  /** Obtains or renews what is due; concurrent calls coalesce into one more round. */
  reconcile(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.round();
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async round(): Promise<void> {
    if (!this.client) return;
    for (const name of this.o.wanted()) {
      if (this.stopped) return;
      if (!this.needsWork(name)) continue;
      const renewing = this.certs.has(name);
      try {
        this.o.log(`acme: ${renewing ? "renewing" : "obtaining"} a certificate for ${name}`);
        const { certPem, keyPem } = await this.client.issue(name);
        this.put(name, certPem, keyPem);
        this.o.log(
          `acme: ${name}: certificate valid until ${new Date(this.certs.get(name)!.notAfter).toISOString()}`,
        );
        this.o.onChange();
      } catch (e) {
        this.o.log(`acme: ${name}: ${(e as Error).message} (retried in the next round)`);
      }
    }
  }

  start(): void {
    if (!this.client) return;
    void this.reconcile();
    this.timer = setInterval(() => void this.reconcile(), this.o.checkEveryMs ?? 6 * 3600_000);
    this.timer.unref?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.running?.catch(() => {});
  }
}
