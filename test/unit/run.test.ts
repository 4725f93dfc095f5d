import { expect, test } from "bun:test";
import { BoundedLog } from "../../src/build/run.ts";

const cap = { headBytes: 100, tailLines: 3, maxLine: 20 };

test("a short output passes whole", () => {
  const out: string[] = [];
  const log = new BoundedLog((l) => out.push(l), cap);
  for (const l of ["a", "b", "c"]) log.push(l);
  log.end();
  expect(out).toEqual(["a", "b", "c"]);
});

test("a flood keeps its head and its tail, and says what was left out", () => {
  const out: string[] = [];
  const log = new BoundedLog((l) => out.push(l), cap);
  for (let i = 0; i < 1000; i++) log.push(`line ${i}`);
  log.end();
  const head = out.slice(
    0,
    out.findIndex((l) => l.startsWith("[lj:")),
  );
  expect(head.join("\n").length).toBeLessThan(cap.headBytes + 20);
  expect(head[0]).toBe("line 0");
  expect(out.at(-1)).toBe("line 999");
  expect(out.slice(-3)).toEqual(["line 997", "line 998", "line 999"]);
  const note = out.find((l) => l.startsWith("[lj:"));
  expect(note).toMatch(
    new RegExp(`^\\[lj: ${1000 - head.length - 3} lines \\(\\d+ bytes\\) of output left out`),
  );
  expect(log.elided).toBe(1000 - head.length - 3);
});

test("a long line is cut, saying by how much", () => {
  const out: string[] = [];
  const log = new BoundedLog((l) => out.push(l), cap);
  log.push("x".repeat(50));
  expect(out).toEqual([`${"x".repeat(20)} [... 30 more characters]`]);
});
