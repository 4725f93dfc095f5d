/**
 * One error type for the whole project. `code` is stable and machine-readable, `exitCode`
 * follows sysexits(3) so shell callers can branch on it, `httpStatus` is what the API answers.
 */
export const ExitCode = {
  usage: 64,
  dataErr: 65,
  notFound: 66,
  unavailable: 69,
  software: 70,
  osErr: 71,
  cantCreate: 73,
  ioErr: 74,
  permission: 77,
  config: 78,
} as const;

export type LjErrorKind =
  | "usage"
  | "invalid"
  | "not-found"
  | "conflict"
  | "config"
  | "permission"
  | "isolation"
  | "unavailable"
  | "internal";

const kindTable: Record<LjErrorKind, { exit: number; http: number }> = {
  usage: { exit: ExitCode.usage, http: 400 },
  invalid: { exit: ExitCode.dataErr, http: 422 },
  "not-found": { exit: ExitCode.notFound, http: 404 },
  conflict: { exit: ExitCode.cantCreate, http: 409 },
  config: { exit: ExitCode.config, http: 500 },
  permission: { exit: ExitCode.permission, http: 403 },
  isolation: { exit: ExitCode.osErr, http: 500 },
  unavailable: { exit: ExitCode.unavailable, http: 503 },
  internal: { exit: ExitCode.software, http: 500 },
};

export interface LjErrorOptions {
  hint?: string;
  cause?: unknown;
  /** Overrides the kind's default HTTP status (e.g. 413 for an oversized body). */
  httpStatus?: number;
}

export class LjError extends Error {
  readonly kind: LjErrorKind;
  readonly code: string;
  readonly hint?: string;
  readonly exitCode: number;
  readonly httpStatus: number;

  constructor(kind: LjErrorKind, code: string, message: string, opts: LjErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "LjError";
    this.kind = kind;
    this.code = code;
    this.hint = opts.hint;
    this.exitCode = kindTable[kind].exit;
    this.httpStatus = opts.httpStatus ?? kindTable[kind].http;
  }

  toJSON(): { code: string; message: string; hint?: string } {
    return { code: this.code, message: this.message, ...(this.hint ? { hint: this.hint } : {}) };
  }
}

export const usageError = (message: string, hint?: string) =>
  new LjError("usage", "usage", message, { hint });

export const isLjError = (e: unknown): e is LjError => e instanceof LjError;
