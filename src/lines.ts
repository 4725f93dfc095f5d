/**
 * Lines out of a byte stream: a jail's output (app processes, builds, release commands) and
 * the API's NDJSON frames are all read this way.
 */

/** A line without an end is handed on once it reaches this many characters. */
export const MAX_LINE = 16384;

/**
 * Splits a byte stream into lines (without "\n" or a "\r" before it) and hands each to `fn`,
 * the last partial line at the end. A line longer than `maxLine` is cut there, so a stream
 * without newlines never grows a buffer unbounded. A stream that fails mid-read (a jail that
 * went away) ends like a stream that ended; what `fn` throws is the caller's.
 */
export async function pumpLines(
  stream: ReadableStream<Uint8Array> | null,
  fn: (line: string) => void,
  maxLine = MAX_LINE,
): Promise<void> {
  if (!stream) return;
  const dec = new TextDecoder();
  const reader = stream.getReader();
  let buf = "";
  for (;;) {
    let chunk: Uint8Array;
    try {
      const r = await reader.read();
      if (r.done) break;
      chunk = r.value;
    } catch {
      break; // the stream's source went away mid-read: what came is handed on below
    }
    buf += dec.decode(chunk, { stream: true });
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      fn(buf.slice(0, nl).replace(/\r$/, ""));
      buf = buf.slice(nl + 1);
    }
    if (buf.length > maxLine) {
      fn(buf);
      buf = "";
    }
  }
  buf += dec.decode();
  if (buf.length > 0) fn(buf);
}
