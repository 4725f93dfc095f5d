/**
 * The one rule for the names of apps and services: a DNS label that starts with a letter, at
 * most 31 characters (it names the app's host `APP.<domain>`, its git repository, its slugs,
 * its host identity and its jails' hostnames).
 */
import { LjError } from "../errors.ts";

export const NAME_PATTERN = "[a-z][a-z0-9-]{0,30}";
export const NAME_RE = new RegExp(`^${NAME_PATTERN}$`);
const HINT = "use 1-31 lower-case letters, digits and dashes, starting with a letter";

/** Returns the name if it follows the rule; otherwise a usage error naming what it names. */
export function checkName(name: string, what: "app" | "service" = "app"): string {
  if (typeof name !== "string" || !NAME_RE.test(name)) {
    throw new LjError("usage", `bad-${what}-name`, `invalid ${what} name ${JSON.stringify(name)}`, {
      hint: HINT,
    });
  }
  return name;
}
