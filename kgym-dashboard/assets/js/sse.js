// Server-sent events over fetch: EventSource cannot send an Authorization
// header, so the stream is read from a fetch body and parsed here (the
// WHATWG event-stream format: `field: value` lines, a blank line ends an
// event, `:` starts a comment).

/**
 * Yields `{event, data, id}` for each event of a `ReadableStream` of bytes
 * (a fetch `Response.body`).
 */
export async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "";
  let data = [];
  let id = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      // Lines end with \r\n, \n or \r; keep a trailing partial line (and a
      // lone \r that may be the first half of \r\n).
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const c = buffer[i];
        if (c !== "\n" && c !== "\r") continue;
        if (c === "\r" && i === buffer.length - 1) break;
        const line = buffer.slice(start, i);
        start = c === "\r" && buffer[i + 1] === "\n" ? i + 2 : i + 1;
        if (c === "\r" && buffer[i + 1] === "\n") i += 1;
        if (line === "") {
          if (data.length) yield { event: event || "message", data: data.join("\n"), id };
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
        else if (field === "id") id = val;
      }
      buffer = buffer.slice(start);
    }
  } finally {
    reader.releaseLock();
  }
}
