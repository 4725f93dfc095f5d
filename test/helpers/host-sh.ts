/** Runs a shell command on the host; its exit code and its output (stdout, then stderr). */
export function hostSh(cmd: string): { code: number; out: string } {
  const p = Bun.spawnSync(["sh", "-c", cmd], { stderr: "pipe" });
  return { code: p.exitCode, out: p.stdout.toString() + p.stderr.toString() };
}
