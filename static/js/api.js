// Sluice's HTTP API as the page uses it: models, generations, cancel, and the
// optional API key (kept in sessionStorage, sent as `Authorization: Bearer`).

const KEY_STORAGE = "sluice.apiKey";

/** An HTTP failure, with Sluice's `{"error": {"code", "message"}}` when it sent one. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, or 0 when the server could not be reached
   * @param {string} code
   * @param {string} message
   * @param {number|null} retryAfter seconds, from `Retry-After`
   */
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** A plain object to keep in a conversation. */
  toJSON() {
    return { status: this.status, code: this.code, message: this.message, retryAfter: this.retryAfter };
  }
}

export function apiKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch (_) {
    return "";
  }
}

export function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch (_) {
    // Storage disabled: the key lasts for this page only.
  }
}

/**
 * Request headers: JSON plus the key when there is one.
 * @param {Record<string, string>} [extra]
 */
export function headers(extra = {}) {
  /** @type {Record<string, string>} */
  const result = { ...extra };
  const key = apiKey();
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

async function request(method, url, body) {
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (_) {
    throw new ApiError(0, "network_error", "Sluice could not be reached. Check the connection.");
  }
  if (response.ok) {
    return response.status === 204 ? null : response.json();
  }
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const payload = await response.json();
    if (payload && payload.error) {
      code = payload.error.code || code;
      message = payload.error.message || message;
    }
  } catch (_) {
    // Not JSON (a proxy's error page): keep the status line.
  }
  const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  throw new ApiError(response.status, code, message, Number.isFinite(retry) ? retry : null);
}

/** `GET /api/models`: `{models: [{id, provider}], providers: {name: {status, error?}}}`. */
export function listModels() {
  return request("GET", "/api/models");
}

/**
 * `POST /api/generations`: `{id, events_url}`.
 * @param {{model: string, messages: object[], options?: object, extra?: object}} body a chat body
 */
export function startGeneration(body) {
  return request("POST", "/api/generations", body);
}

/** `GET /api/generations/<id>`: `{id, model, status, events}`. */
export function generationState(id) {
  return request("GET", `/api/generations/${encodeURIComponent(id)}`);
}

/** `DELETE /api/generations/<id>`: cancel (the upstream request is closed). */
export function cancelGeneration(id) {
  return request("DELETE", `/api/generations/${encodeURIComponent(id)}`);
}
