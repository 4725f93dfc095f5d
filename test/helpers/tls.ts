import { readFileSync } from "node:fs";
import { join } from "node:path";

/** A self-signed P-256 certificate for `name` (PEM texts), made with openssl in `dir`. */
export function selfSigned(dir: string, name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt.pem`);
  const key = join(dir, `${name}.key.pem`);
  const r = Bun.spawnSync(
    ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
      .concat(["-keyout", key, "-out", cert, "-subj", `/CN=${name}`, "-addext", `subjectAltName=DNS:${name}`])
      .concat(["-days", "2"]),
    { stderr: "pipe" },
  );
  if (r.exitCode !== 0) throw new Error(`openssl: ${r.stderr}`);
  return { cert: readFileSync(cert, "utf8"), key: readFileSync(key, "utf8") };
}
