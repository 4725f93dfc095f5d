/**
 * The shared tables (zig/src/spawn-flags.txt, zig/src/cgroup-limits.txt) that the shim embeds
 * too (zig/src/table.zig): one row a line, columns separated by spaces, `#` lines are comments.
 */
export function tableRows(text: string): string[][] {
  return text
    .split("\n")
    .filter((l) => l.trim() && !l.startsWith("#"))
    .map((l) => l.trim().split(/\s+/));
}
