// Follow a generation's events: the browser's EventSource, or FetchEventSource
// when an API key must be sent. Resumes from `after` (the last event id the
// page has), and the browser's reconnects carry `Last-Event-ID`, so a blip
// loses nothing and repeats nothing.

import { apiKey, headers } from "./api.js";
import { FetchEventSource } from "./sse.js";

/**
 * @param {string} eventsUrl `events_url` from `POST /api/generations`
 * @param {object} handlers
 * @param {number} handlers.after last event id already received (-1 for none)
 * @param {(event: object, id: number|null) => void} handlers.onEvent each parsed event
 * @param {(state: "open"|"reconnecting") => void} handlers.onState connection changes
 * @param {(status: number|null) => void} handlers.onClosed the server ended the stream
 *   without a terminal event (204, 401, 404…; status when known)
 * @returns {{close: () => void}}
 */
export function follow(eventsUrl, { after, onEvent, onState, onClosed }) {
  const key = apiKey();
  let source;
  if (key) {
    source = new FetchEventSource(eventsUrl, {
      headers: headers(),
      lastEventId: after >= 0 ? String(after) : "",
    });
  } else {
    // EventSource cannot set Last-Event-ID on its first request: `?after=` does;
    // its own reconnects then send the header, which the server prefers.
    const url = after >= 0 ? `${eventsUrl}?after=${after}` : eventsUrl;
    source = new EventSource(url);
  }
  let closed = false;
  const close = () => {
    closed = true;
    source.close();
  };
  source.onopen = () => onState("open");
  source.onmessage = (message) => {
    if (closed) return;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (_) {
      return; // not one of Sluice's events
    }
    const id = message.lastEventId === "" ? null : Number(message.lastEventId);
    onEvent(event, Number.isFinite(id) ? id : null);
    if (event.type === "done" || event.type === "error") close();
  };
  source.onerror = (detail) => {
    if (closed) return;
    if (source.readyState === 2 /* CLOSED */) {
      closed = true;
      onClosed(detail && typeof detail.status === "number" ? detail.status : null);
    } else {
      onState("reconnecting");
    }
  };
  return { close };
}
