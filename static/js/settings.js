// Per-conversation settings: a system prompt, temperature, max tokens and a
// free-form JSON "extra" for provider knobs. Kept on the conversation as
// `settings: {system, temperature, maxTokens, extra}` (null/"" = the model's
// default) and turned into the chat body's `messages[0]`, `options` and `extra`.

/** A setting that cannot be used; `field` names the input to fix. */
export class SettingsError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

export const EMPTY = Object.freeze({ system: "", temperature: null, maxTokens: null, extra: null });

/**
 * Check the panel's raw values and make them settings.
 * @param {{system: string, temperature: string, maxTokens: string, extra: string}} raw
 * @throws {SettingsError}
 */
export function parseSettings(raw) {
  const settings = { system: raw.system.trim() ? raw.system : "", temperature: null, maxTokens: null, extra: null };
  const temperature = raw.temperature.trim();
  if (temperature) {
    const value = Number(temperature);
    if (!Number.isFinite(value) || value < 0 || value > 2) {
      throw new SettingsError("temperature", "Temperature must be a number from 0 to 2.");
    }
    settings.temperature = value;
  }
  const maxTokens = raw.maxTokens.trim();
  if (maxTokens) {
    const value = Number(maxTokens);
    if (!Number.isInteger(value) || value < 1) {
      throw new SettingsError("maxTokens", "Max tokens must be a whole number, 1 or more.");
    }
    settings.maxTokens = value;
  }
  const extra = raw.extra.trim();
  if (extra) {
    let value;
    try {
      value = JSON.parse(extra);
    } catch (error) {
      throw new SettingsError("extra", `Extra is not valid JSON: ${error.message}`);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new SettingsError("extra", 'Extra must be a JSON object, like {"options": {"num_ctx": 8192}}.');
    }
    if (Object.keys(value).length) settings.extra = value;
  }
  return settings;
}

/** The chat body's settings part: `{system, options, extra}` (only what is set). */
export function requestParts(settings) {
  const s = settings || EMPTY;
  const options = {};
  if (s.temperature !== null && s.temperature !== undefined) options.temperature = s.temperature;
  if (s.maxTokens !== null && s.maxTokens !== undefined) options.max_tokens = s.maxTokens;
  return { system: s.system || "", options, extra: s.extra || null };
}

/** "temperature 0.2 · max 50 tokens · system prompt · extra {…}" for under an answer ("" when all default). */
export function describe(settings) {
  if (!settings) return "";
  const parts = [];
  if (settings.temperature !== null && settings.temperature !== undefined) parts.push(`temperature ${settings.temperature}`);
  if (settings.maxTokens) parts.push(`max ${settings.maxTokens} tokens`);
  if (settings.system) parts.push("system prompt");
  if (settings.extra) parts.push(`extra ${JSON.stringify(settings.extra)}`);
  return parts.join(" · ");
}

/**
 * The Settings panel.
 * @param {object} els toggle, panel (a form), close, system, temperature, maxTokens, extra, error, summary
 * @param {object} hooks
 * @param {() => object} hooks.get the open conversation's settings
 * @param {(settings: object) => void} hooks.save keep them on the conversation
 */
export function createSettingsPanel(els, { get, save }) {
  const inputs = { system: els.system, temperature: els.temperature, maxTokens: els.maxTokens, extra: els.extra };

  function fill() {
    const s = { ...EMPTY, ...(get() || {}) };
    els.system.value = s.system || "";
    els.temperature.value = s.temperature === null || s.temperature === undefined ? "" : String(s.temperature);
    els.maxTokens.value = s.maxTokens ? String(s.maxTokens) : "";
    els.extra.value = s.extra ? JSON.stringify(s.extra, null, 2) : "";
    showError(null);
    summarize(s);
  }

  function summarize(s) {
    const text = describe(s);
    els.toggle.classList.toggle("set", Boolean(text));
    els.toggle.title = text ? `This chat: ${text}` : "This chat uses the model's defaults";
  }

  function showError(error) {
    for (const [name, input] of Object.entries(inputs)) {
      if (error && error.field === name) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
    els.error.textContent = error ? error.message : "";
    els.error.hidden = !error;
  }

  function raw() {
    return {
      system: els.system.value,
      temperature: els.temperature.value,
      maxTokens: els.maxTokens.value,
      extra: els.extra.value,
    };
  }

  /** Save what the panel holds; false (with the reason shown) when it cannot be used. */
  function commit() {
    let settings;
    try {
      settings = parseSettings(raw());
    } catch (error) {
      if (!(error instanceof SettingsError)) throw error;
      showError(error);
      inputs[error.field].focus();
      return false;
    }
    showError(null);
    save(settings);
    summarize(settings);
    return true;
  }

  function setOpen(open) {
    if (open) fill();
    els.panel.hidden = !open;
    els.toggle.setAttribute("aria-expanded", String(open));
    if (open) els.system.focus();
  }

  // A field being corrected is no longer marked wrong.
  for (const input of Object.values(inputs)) {
    input.addEventListener("input", () => {
      if (input.getAttribute("aria-invalid") === "true") showError(null);
    });
  }

  els.toggle.addEventListener("click", () => setOpen(els.panel.hidden));
  els.close.addEventListener("click", () => {
    setOpen(false);
    els.toggle.focus();
  });
  els.panel.addEventListener("submit", (event) => {
    event.preventDefault();
    if (commit()) {
      els.status.textContent = "Settings saved.";
      setOpen(false);
      els.toggle.focus();
    }
  });
  els.panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      setOpen(false);
      els.toggle.focus();
    }
  });

  return {
    /** The conversation changed: show its settings. */
    refresh() {
      if (!els.panel.hidden) fill();
      else summarize({ ...EMPTY, ...(get() || {}) });
    },
    /** Before sending: an open panel's edits are saved first; false when they are invalid. */
    commitIfOpen() {
      return els.panel.hidden ? true : commit();
    },
  };
}
