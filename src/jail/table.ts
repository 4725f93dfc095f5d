/**
 * The shared tables (zig/src/spawn-flags.txt, cgroup-limits.txt, endings.txt,
 * oom-evidence.txt) that the shim embeds too (zig/src/table.zig): one row a line, columns
 * separated by spaces, `#` lines are comments.
 */
export function tableRows(text: string): string[][] {
  return text
    .split("\n")
    .filter((l) => l.trim() && !l.startsWith("#"))
    .map((l) => l.trim().split(/\s+/));
}

/** A table of words: the key, then the rest of the line. */
export function tableWords(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const l of text.split("\n")) {
    if (!l.trim() || l.startsWith("#")) continue;
    const m = /^(\S+)\s+(.+?)\s*$/.exec(l);
    if (!m) throw new Error(`a table line without words: ${l}`);
    out.set(m[1]!, m[2]!);
  }
  return out;
}
