// Conversations in localStorage: one key per conversation (so two tabs working
// on different conversations do not overwrite each other), an index for the
// sidebar, the open conversation and the last model chosen.
//
//   sluice.v1.index      [{id, title, updated}]  newest first
//   sluice.v1.conv.<id>  {id, title, created, updated, messages: [...]}
//   sluice.v1.open       id of the open conversation
//   sluice.v1.model      last model chosen
//
// A message is {role: "user", content} or {role: "assistant", content, model,
// status: "pending"|"streaming"|"done"|"stopped"|"error", generation?: {id,
// eventsUrl, lastEventId}, error?, finishReason?, usage?, stats?}. An answer
// still streaming is saved with the id of the last event its content includes,
// so a reload resumes exactly after it.

const PREFIX = "sluice.v1.";
export const INDEX_KEY = `${PREFIX}index`;
export const CONV_PREFIX = `${PREFIX}conv.`;

/** Called with a message when the browser refuses to store (quota, private mode). */
/** @type {(message: string) => void} */
let onStorageError = () => {};
export function setStorageErrorHandler(handler) {
  onStorageError = handler;
}

function read(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch (_) {
    return fallback;
  }
}

function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch (_) {
    onStorageError("This browser's storage is full: delete old conversations to keep new ones.");
    return false;
  }
}

export function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** @returns {{id: string, title: string, updated: number}[]} newest first */
export function listConversations() {
  const index = read(INDEX_KEY, []);
  return Array.isArray(index) ? index : [];
}

export function loadConversation(id) {
  const conversation = read(CONV_PREFIX + id, null);
  return conversation && Array.isArray(conversation.messages) ? conversation : null;
}

/** Save a conversation and move it to the top of the index. */
export function saveConversation(conversation, { touch = true } = {}) {
  if (touch) conversation.updated = Date.now();
  write(CONV_PREFIX + conversation.id, conversation);
  const entry = { id: conversation.id, title: conversation.title, updated: conversation.updated };
  const index = listConversations().filter((item) => item.id !== conversation.id);
  index.push(entry);
  index.sort((a, b) => b.updated - a.updated);
  write(INDEX_KEY, index);
}

export function deleteConversation(id) {
  try {
    localStorage.removeItem(CONV_PREFIX + id);
  } catch (_) {
    // nothing to do
  }
  write(
    INDEX_KEY,
    listConversations().filter((item) => item.id !== id),
  );
}

export function createConversation() {
  const now = Date.now();
  return { id: newId(), title: "New chat", titled: false, created: now, updated: now, messages: [] };
}

export function openId() {
  return read(`${PREFIX}open`, null);
}

export function setOpenId(id) {
  write(`${PREFIX}open`, id);
}

export function lastModel() {
  return read(`${PREFIX}model`, null);
}

export function setLastModel(model) {
  write(`${PREFIX}model`, model);
}
