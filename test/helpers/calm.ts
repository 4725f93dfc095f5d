/**
 * Another app's answers timed while one app is hammered, by a process of their own: the edge's
 * overflow router (or the built-in edge) may run in the process that asks, and a client sharing
 * its event loop would time that loop's backlog rather than the edge.
 */
export async function timedRequests(
  url: string,
  host: string,
  ms: number,
  gapMs = 20,
  status = 200,
): Promise<number[]> {
  const script = `
const times = [];
const end = performance.now() + ${ms};
while (performance.now() < end) {
  const t = performance.now();
  const r = await fetch(${JSON.stringify(url)}, { headers: { host: ${JSON.stringify(host)} } });
  await r.text();
  if (r.status !== ${status}) {
    console.error("${host} answered " + r.status);
    process.exit(1);
  }
  times.push(performance.now() - t);
  await Bun.sleep(${gapMs});
}
console.log(JSON.stringify(times));
`;
  const p = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  if (code !== 0) throw new Error(`timing ${host} failed: ${err.trim()}`);
  return JSON.parse(out) as number[];
}

/** The median of some times. */
export function median(times: number[]): number {
  const s = [...times].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
