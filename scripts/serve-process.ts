/**
 * Starting `lj serve` as a child process, for the demo, the deploy benchmark and the tests:
 * with `--json` it prints one line, {"url", "token"}, once it listens.
 */
import type { Subprocess } from "bun";

/** Reads a stream up to its first newline: how a child process says it is ready. */
export async function firstLine(stream: ReadableStream<Uint8Array>, what: string): Promise<string> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let text = "";
  try {
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${what} ended before it was ready`);
      text += decoder.decode(value, { stream: true });
    }
  } finally {
    reader.releaseLock();
  }
  return text.slice(0, text.indexOf("\n"));
}

export interface ServeProcess {
  proc: Subprocess<"ignore", "pipe", "inherit">;
  url: string;
  token: string;
}

/** Runs `argv` (an `lj serve --json` command line) and waits until it listens. */
export async function startServe(
  argv: string[],
  env: Record<string, string | undefined>,
): Promise<ServeProcess> {
  const proc = Bun.spawn(argv, { env, stdin: "ignore", stdout: "pipe", stderr: "inherit" });
  try {
    const { url, token } = JSON.parse(await firstLine(proc.stdout, "lj serve")) as {
      url: string;
      token: string;
    };
    return { proc, url, token };
  } catch (e) {
    proc.kill("SIGKILL");
    throw e;
  }
}
