/**
 * Custom domains: an app answers at each of its domains as well as at APP.<domain>. The
 * database holds them; the edge looks them up per request in a map kept in step with it, and
 * the certificate manager wants a certificate for each.
 */
import { LjError } from "../errors.ts";
import type { DomainRow, PaasDb } from "./db.ts";

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * The canonical form of a domain name (lower case, no trailing dot), or a usage error naming
 * the field. Only names a certificate can be issued for over HTTP-01: at least two labels,
 * no wildcard, no IP address, none under the server's own domain (those are APP.<domain>).
 */
export function checkDomain(input: unknown, serverDomain: string): string {
  const bad = (why: string) =>
    new LjError("usage", "bad-domain", `domain: ${JSON.stringify(input)} ${why}`, {
      hint: "give a host name such as www.example.com (letters, digits, dashes; labels of 1-63 characters)",
    });
  if (typeof input !== "string" || input === "") throw bad("is not a domain name");
  const d = input.toLowerCase().replace(/\.$/, "");
  if (d.length > 253) throw bad("is longer than 253 characters");
  if (d.includes("*"))
    throw bad("is a wildcard: certificates for wildcards need DNS-01, which lj does not do");
  const labels = d.split(".");
  if (labels.length < 2) throw bad("needs at least two labels (name.tld)");
  if (!labels.every((l) => LABEL.test(l))) throw bad("is not a valid host name");
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) throw bad("is an IP address, not a domain name");
  const own = serverDomain.toLowerCase();
  if (d === own || d.endsWith(`.${own}`))
    throw bad(`is under the server's own domain ${own}, where apps already answer as APP.${own}`);
  return d;
}

/** The domains of every app, cached for the per-request lookup. */
export class Domains {
  private byName = new Map<string, string>();

  constructor(
    private readonly db: PaasDb,
    private readonly serverDomain: string,
    /** Called after every change (the edge and the certificate manager listen). */
    private readonly onChange: () => void = () => {},
  ) {
    this.reload();
  }

  private reload(): void {
    this.byName = new Map(this.db.domains().map((d) => [d.domain, d.app]));
  }

  /** The app a Host header (name[:port]) names, or null. */
  appFor(host: string): string | null {
    if (this.byName.size === 0) return null;
    let h = host.toLowerCase();
    const colon = h.lastIndexOf(":");
    if (colon >= 0 && !h.startsWith("[")) h = h.slice(0, colon);
    return this.byName.get(h.endsWith(".") ? h.slice(0, -1) : h) ?? null;
  }

  /** Every domain name. */
  names(): string[] {
    return [...this.byName.keys()];
  }

  list(app?: string): DomainRow[] {
    return this.db.domains(app);
  }

  add(app: string, input: unknown): DomainRow {
    const row = this.db.addDomain(app, checkDomain(input, this.serverDomain));
    this.reload();
    this.onChange();
    return row;
  }

  remove(app: string, input: unknown): void {
    this.db.removeDomain(app, checkDomain(input, this.serverDomain));
    this.reload();
    this.onChange();
  }

  /** After an app is destroyed (its rows went with it). */
  refresh(): void {
    this.reload();
    this.onChange();
  }
}
