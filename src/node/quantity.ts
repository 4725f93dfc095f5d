/**
 * Kubernetes resource quantities ("512Mi", "1G", "250m", "1.5", "2e9") as numbers: bytes for
 * memory, CPUs for cpu. Only the forms the API server accepts; anything else is refused.
 */
import { LjError } from "../errors.ts";

const SUFFIX: Record<string, number> = {
  "": 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

export function parseQuantity(q: string | number): number {
  if (typeof q === "number") return q;
  const m = /^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?)$/.exec(
    q.trim(),
  );
  if (!m) throw new LjError("invalid", "bad-quantity", `"${q}" is not a Kubernetes quantity`);
  const n = Number(m[1]) * (m[2] ? 10 ** Number(m[2].slice(1)) : SUFFIX[m[3] ?? ""]!);
  if (!Number.isFinite(n) || n < 0) throw new LjError("invalid", "bad-quantity", `"${q}" is out of range`);
  return n;
}

/** CPUs as the API writes them: whole CPUs, else millicores. */
export function formatCpus(cpus: number): string {
  return Number.isInteger(cpus) ? String(cpus) : `${Math.floor(cpus * 1000)}m`;
}

/** Bytes as the API writes them, in Ki. */
export function formatBytes(bytes: number): string {
  return `${Math.floor(bytes / 1024)}Ki`;
}
