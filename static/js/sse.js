// An EventSource over fetch(), for streams that need request headers.
//
// The browser's EventSource cannot send `Authorization`, so when the page holds
// an API key it follows a generation with this class instead. It keeps
// EventSource's contract where it matters here: `onmessage` gets
// `{data, lastEventId}`, a dropped connection is retried after `retry:` ms with
// `Last-Event-ID`, and `204` (or any non-2xx answer) ends it for good
// (readyState CLOSED, `onerror` gets `{status}`).

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 2;

export class FetchEventSource {
  /**
   * @param {string} url
   * @param {{headers?: Record<string,string>, lastEventId?: string|null}} [options]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.readyState = CONNECTING;
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this._headers = options.headers || {};
    this._lastEventId = options.lastEventId ?? "";
    this._retryMs = 3000;
    this._abort = new AbortController();
    this._run();
  }

  close() {
    this.readyState = CLOSED;
    this._abort.abort();
  }

  async _run() {
    while (this.readyState !== CLOSED) {
      let response;
      try {
        const headers = { ...this._headers, Accept: "text/event-stream" };
        if (this._lastEventId !== "") headers["Last-Event-ID"] = this._lastEventId;
        response = await fetch(this.url, { headers, cache: "no-store", signal: this._abort.signal });
      } catch (_) {
        if (!(await this._reconnect())) return;
        continue;
      }
      if (response.status !== 200) {
        // 204: nothing more to send; anything else: refused. Either way, stop.
        this.readyState = CLOSED;
        this._emitError({ status: response.status, response });
        return;
      }
      this.readyState = OPEN;
      if (this.onopen) this.onopen({});
      try {
        await this._read(response.body);
      } catch (_) {
        // A network error mid-stream: reconnect below.
      }
      if (!(await this._reconnect())) return;
    }
  }

  /** Wait `retry` ms, then go on (true), unless closed meanwhile (false). */
  async _reconnect() {
    if (this.readyState === CLOSED) return false;
    this.readyState = CONNECTING;
    this._emitError({ status: 0 });
    await new Promise((resolve) => setTimeout(resolve, this._retryMs));
    return this.readyState !== CLOSED;
  }

  _emitError(detail) {
    if (this.onerror) this.onerror(detail);
  }

  /** Parse the event stream (the HTML Standard's algorithm, for unnamed events). */
  async _read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let data = [];
    let eventType = "";
    const dispatch = () => {
      if (data.length > 0 && this.readyState !== CLOSED && this.onmessage) {
        this.onmessage({ type: eventType || "message", data: data.join("\n"), lastEventId: this._lastEventId });
      }
      data = [];
      eventType = "";
    };
    const line = (text) => {
      if (text === "") return dispatch();
      if (text.startsWith(":")) return; // a comment (": ping")
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") eventType = value;
      else if (field === "id" && !value.includes("\0")) this._lastEventId = value;
      else if (field === "retry" && /^\d+$/.test(value)) this._retryMs = Number(value);
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // Lines end with CRLF, LF or CR; a CR at the very end may be half of a CRLF.
      let match;
      while ((match = /\r\n|\r|\n/.exec(buffer)) !== null) {
        if (match[0] === "\r" && match.index === buffer.length - 1) break;
        line(buffer.slice(0, match.index));
        buffer = buffer.slice(match.index + match[0].length);
      }
    }
  }
}

FetchEventSource.CONNECTING = CONNECTING;
FetchEventSource.OPEN = OPEN;
FetchEventSource.CLOSED = CLOSED;
