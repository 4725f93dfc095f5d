/** Runs a shell command on the host; its exit code and its output (stdout, then stderr). */
export function hostSh(cmd: string): { code: number; out: string } {
  const p = Bun.spawnSync(["sh", "-c", cmd], { stderr: "pipe" });
  return { code: p.exitCode, out: p.stdout.toString() + p.stderr.toString() };
}

/**
 * What `ip ARGS` lists (stdout only), and its exit code. When the host's addresses or routes
 * change during a dump, the kernel marks it interrupted and ip says so on stderr, yet exits 0
 * with a listing that may lack entries: such a dump is asked for again.
 */
export function ipList(args: string[]): { code: number; out: string } {
  for (let i = 0; ; i++) {
    const p = Bun.spawnSync(["ip", ...args], { stdout: "pipe", stderr: "pipe" });
    if (!p.stderr.toString().includes("Dump was interrupted") || i === 50)
      return { code: p.exitCode, out: p.stdout.toString() };
  }
}

/** A host interface's IPv4 addresses, one line each as `ip -4 -o addr` gives them ("" for none); null once it is gone. */
export function hostIpv4(dev: string): string | null {
  const r = ipList(["-4", "-o", "addr", "show", "dev", dev]);
  return r.code === 0 ? r.out.trim() : null;
}
