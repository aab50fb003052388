// Sluice's chat page: the controller. It owns the conversations (kept in
// localStorage by store.js), starts each answer with POST /api/generations and
// follows its events (stream.js), so an answer survives a blip, a sleep or a
// reload; view.js draws, markdown.js renders, models.js fills the picker,
// images.js keeps attached pictures (IndexedDB), settings.js the per-chat
// settings, transfer.js export and import.

import * as api from "./api.js";
import { foldEvent } from "./fold.js";
import * as images from "./images.js";
import { createModelPicker } from "./models.js";
import { createAutoscroll } from "./scroll.js";
import { createSettingsPanel, requestParts } from "./settings.js";
import { createSidebar } from "./sidebar.js";
import * as store from "./store.js";
import { follow } from "./stream.js";
import * as transfer from "./transfer.js";
import { createView, errorHeadline } from "./view.js";

// The markup decides what each id is (a form, an input, a list…): typed as such where used.
/** @type {(id: string) => any} */
const $ = (id) => document.getElementById(id);
const SAVE_EVERY_MS = 250;
const MAX_REATTACH = 5;

const els = {
  log: $("log"),
  messages: $("messages"),
  empty: $("empty"),
  prompt: $("prompt"),
  composer: $("composer"),
  send: $("send"),
  stop: $("stop"),
  title: $("title"),
  status: $("status"),
  jump: $("jump"),
  model: $("model"),
  providers: $("providers"),
  auth: $("auth"),
  authForm: $("auth-form"),
  authKey: $("auth-key"),
  newChat: $("new-chat"),
  notice: $("notice"),
  attach: $("attach"),
  attachInput: $("attach-input"),
  attachments: $("attachments"),
  attachError: $("attach-error"),
  dropZone: $("main"),
  exportMd: $("export-md"),
  exportJson: $("export-json"),
  importButton: $("import"),
  importInput: $("import-input"),
};

// ---------------------------------------------------------------- state

/** Conversations loaded in memory, by id (the live answers mutate these objects). */
const cache = new Map();
/** Answers being followed: generation id → {conversation, answer, follower}. */
const live = new Map();
/** Transient, never saved: answer → {connection, stopRequested, reattach}. */
const transient = new WeakMap();
let current = null;

const tState = (answer) => {
  if (!transient.has(answer)) transient.set(answer, { connection: "open", stopRequested: false, reattach: 0 });
  return transient.get(answer);
};
const connectionOf = (message) => (transient.has(message) ? transient.get(message).connection : "open");
const isBusy = (conversation) =>
  conversation.messages.some((m) => m.role === "assistant" && (m.status === "pending" || m.status === "streaming"));

function conversationById(id) {
  if (cache.has(id)) return cache.get(id);
  const loaded = store.loadConversation(id);
  if (loaded) cache.set(id, loaded);
  return loaded;
}

// ---------------------------------------------------------------- saving

const saveTimers = new Map();

/** Save now (structural changes, ends of answers). */
function save(conversation) {
  clearTimeout(saveTimers.get(conversation.id));
  saveTimers.delete(conversation.id);
  store.saveConversation(conversation);
  renderSidebar();
}

/** Save soon: tokens arrive far faster than storage needs them (content and id stay consistent). */
function saveSoon(conversation) {
  if (saveTimers.has(conversation.id)) return;
  saveTimers.set(
    conversation.id,
    setTimeout(() => {
      saveTimers.delete(conversation.id);
      store.saveConversation(conversation, { touch: false });
    }, SAVE_EVERY_MS),
  );
}

function flushSaves() {
  for (const id of [...saveTimers.keys()]) {
    clearTimeout(saveTimers.get(id));
    saveTimers.delete(id);
    const conversation = cache.get(id);
    if (conversation) store.saveConversation(conversation, { touch: false });
  }
}

// ---------------------------------------------------------------- drawing

const view = createView(
  { list: els.messages, empty: els.empty },
  {
    retry: (index) => rerun(current, index, { retry: true }),
    regenerate: (index) => rerun(current, index),
    continue: (index) => continueAnswer(current, index),
    edit: (index, text) => editAndResend(current, index, text),
    useKey: (key, index) => {
      api.setApiKey(key);
      hideAuthBanner();
      models.refresh();
      rerun(current, index);
    },
  },
);
const autoscroll = createAutoscroll(els.log, els.jump);
const sidebar = createSidebar(
  { list: $("conversations"), sidebar: $("sidebar"), menuButton: $("menu"), scrim: $("scrim") },
  { open: openConversation, rename: renameConversation, remove: removeConversation },
);
const models = createModelPicker(els.model, els.providers, document.body.dataset.defaultModel, (error) => {
  if (error.code === "unauthorized") showAuthBanner();
});

function renderSidebar() {
  const busy = new Set([...live.values()].map((entry) => entry.conversation.id));
  sidebar.render(store.listConversations(), current && current.id, busy);
}

const settingsPanel = createSettingsPanel(
  {
    toggle: $("settings-toggle"),
    panel: $("settings"),
    close: $("settings-close"),
    system: $("set-system"),
    temperature: $("set-temperature"),
    maxTokens: $("set-max-tokens"),
    extra: $("set-extra"),
    error: $("set-error"),
    status: els.status,
  },
  {
    get: () => current && current.settings,
    save: (settings) => {
      current.settings = settings;
      // An empty chat is saved with its first message; settings wait in memory till then.
      if (current.messages.length) store.saveConversation(current, { touch: false });
    },
  },
);

function renderConversation() {
  view.render(current, isBusy(current), connectionOf);
  settingsPanel.refresh();
  els.title.textContent = current.title;
  document.title = current.messages.length ? `${current.title} · Sluice` : "Sluice";
  updateComposer();
  autoscroll.toBottom();
}

const pendingFrames = new Map();

/** Redraw one answer at the next frame (many tokens, one paint). */
function redraw(conversation, answer) {
  if (conversation !== current) return;
  if (pendingFrames.has(answer)) return;
  pendingFrames.set(
    answer,
    requestAnimationFrame(() => {
      pendingFrames.delete(answer);
      if (conversation !== current) return;
      const index = current.messages.indexOf(answer);
      if (index < 0) return;
      view.update(current, index, isBusy(current), connectionOf);
      autoscroll.changed();
    }),
  );
}

function updateComposer() {
  const busy = isBusy(current);
  els.send.hidden = busy;
  els.stop.hidden = !busy;
  els.composer.classList.toggle("busy", busy);
}

function announce(text) {
  els.status.textContent = "";
  // A new text node each time, so the same words are announced again.
  requestAnimationFrame(() => {
    els.status.textContent = text;
  });
}

function showNotice(text) {
  els.notice.textContent = text;
  els.notice.hidden = !text;
}

function showAuthBanner() {
  els.auth.hidden = false;
}

function hideAuthBanner() {
  els.auth.hidden = true;
}

// ---------------------------------------------------------------- answers

/** A user message's content: its text, or text and `image_url` parts with the pictures' `data:` URLs. */
async function userContent(message) {
  if (!message.images || !message.images.length) return message.content;
  /** @type {object[]} */
  const parts = message.content ? [{ type: "text", text: message.content }] : [];
  for (const image of message.images) {
    const record = await images.getImage(image.id);
    if (!record) {
      throw { code: "image_missing", message: `The picture “${image.name}” is no longer stored in this browser.` };
    }
    parts.push({ type: "image_url", image_url: { url: record.url } });
  }
  return parts;
}

/**
 * The chat body for `answer`: the settings' system prompt, everything before it
 * that has content (answers as their text only: their reasoning is never sent
 * back), and, to continue it, the answer so far as the last message.
 */
async function requestBody(conversation, answer, continuing) {
  const index = conversation.messages.indexOf(answer);
  const messages = [];
  for (const m of conversation.messages.slice(0, continuing ? index + 1 : index)) {
    if (m.role === "user") messages.push({ role: "user", content: await userContent(m) });
    else if (m.role === "assistant" && (m.content || m === answer)) messages.push({ role: "assistant", content: m.content });
  }
  const { system, options, extra } = requestParts(conversation.settings);
  if (system) messages.unshift({ role: "system", content: system });
  const body = { model: answer.model, messages };
  if (Object.keys(options).length) body.options = options;
  if (extra) body.extra = extra;
  return body;
}

/**
 * (Re)start `answer`: POST /api/generations, then follow its events.
 * Options: `continuing` appends to what it has (after "Cut off at the token
 * limit"); `before` is a promise to wait for first (its pictures being stored).
 */
async function run(conversation, answer, { continuing = false, before = null } = {}) {
  const fresh = continuing
    ? {
        stats: { sentAt: Date.now() },
        deltas: 0,
        priorTokens: (answer.priorTokens || 0) + ((answer.usage && answer.usage.completion_tokens) || answer.deltas || 0),
      }
    : {
        priorTokens: 0,
        content: "",
        reasoning: "",
        thinking: null,
        toolCalls: [],
        refusal: "",
        deltas: 0,
        stats: { sentAt: Date.now() },
      };
  Object.assign(answer, fresh, {
    status: "pending",
    continuing,
    error: null,
    finishReason: null,
    usage: null,
    generation: null,
    settings: conversation.settings ? structuredClone(conversation.settings) : null,
  });
  transient.set(answer, { connection: "open", stopRequested: false, reattach: 0 });
  save(conversation);
  refresh(conversation, answer);
  let started;
  try {
    if (before) await before;
    started = await api.startGeneration(await requestBody(conversation, answer, continuing));
  } catch (error) {
    fail(conversation, answer, error);
    return;
  }
  answer.generation = { id: started.id, eventsUrl: started.events_url, lastEventId: -1 };
  answer.status = "streaming";
  save(conversation);
  attach(conversation, answer);
  if (tState(answer).stopRequested) stop(conversation, answer);
}

/** Follow `answer`'s generation from the last event it has. */
function attach(conversation, answer) {
  const generation = answer.generation;
  const follower = follow(generation.eventsUrl, {
    after: generation.lastEventId,
    onEvent: (event, id) => receive(conversation, answer, event, id),
    onState: (state) => {
      tState(answer).connection = state;
      if (state === "open") tState(answer).reattach = 0;
      redraw(conversation, answer);
    },
    onClosed: (status) => diagnose(conversation, answer, status),
  });
  live.set(generation.id, { conversation, answer, follower });
  renderSidebar();
}

function receive(conversation, answer, event, id) {
  const generation = answer.generation;
  if (id !== null) {
    if (id <= generation.lastEventId) return; // already have it: never repeat
    generation.lastEventId = id;
  }
  const kind = foldEvent(answer, event);
  if (kind === "piece") {
    if (!answer.stats.firstAt) answer.stats.firstAt = Date.now();
    answer.deltas = (answer.deltas || 0) + 1;
    if (event.type === "reasoning") {
      if (!answer.thinking) answer.thinking = { startedAt: Date.now(), endedAt: null };
    } else {
      endThinking(answer);
    }
    saveSoon(conversation);
    redraw(conversation, answer);
  } else if (kind === "done") {
    endThinking(answer);
    end(conversation, answer, event.finish_reason === "cancelled" ? "stopped" : "done");
  } else if (kind === "error") {
    end(conversation, answer, "error");
  }
}

/** The thoughts are over once anything else arrives (or the answer ends). */
function endThinking(answer) {
  if (answer.thinking && !answer.thinking.endedAt) answer.thinking.endedAt = Date.now();
}

/** The stream ended without `done`/`error` (204, 404, 401…): find out why. */
async function diagnose(conversation, answer, status) {
  const generation = answer.generation;
  live.delete(generation.id);
  let state;
  try {
    state = await api.generationState(generation.id);
  } catch (error) {
    if (error.status === 0 && tState(answer).reattach++ < MAX_REATTACH) {
      setTimeout(() => attach(conversation, answer), 2000);
      return;
    }
    fail(conversation, answer, error);
    return;
  }
  if (state.status === "running" || generation.lastEventId < state.events - 1) {
    if (tState(answer).reattach++ < MAX_REATTACH) {
      setTimeout(() => attach(conversation, answer), 1000);
      return;
    }
    fail(conversation, answer, { code: "network_error", message: `The stream keeps closing (HTTP ${status ?? "?"}).` });
    return;
  }
  // Ended, and every numbered event is here: the end itself came without a number.
  if (state.status === "error") {
    fail(conversation, answer, { code: "upstream_error", message: "The answer ended with an error." });
  } else {
    end(conversation, answer, state.status === "cancelled" ? "stopped" : "done");
  }
}

function fail(conversation, answer, error) {
  const plain = typeof error.toJSON === "function" ? error.toJSON() : error;
  answer.error = { code: plain.code || "error", message: plain.message || "", retryAfter: plain.retryAfter || null };
  if (answer.error.code === "unauthorized") showAuthBanner();
  end(conversation, answer, "error");
}

function end(conversation, answer, status) {
  if (answer.generation) {
    const entry = live.get(answer.generation.id);
    if (entry) entry.follower.close();
    live.delete(answer.generation.id);
  }
  answer.status = status;
  if (status !== "error") answer.continuing = false;
  endThinking(answer);
  answer.stats = { ...answer.stats, doneAt: Date.now() };
  save(conversation);
  refresh(conversation, answer);
  if (conversation === current) {
    if (status === "error") announce(`Error: ${errorHeadline(answer.error)} ${answer.error.message || ""}`);
    else if (status === "stopped") announce("Stopped.");
    else if (answer.finishReason === "length") announce("Cut off at the token limit. Continue asks for the rest.");
    else if (answer.finishReason === "content_filter") announce("Stopped by the provider's content filter.");
    else if (answer.refusal) announce("The model refused to answer.");
    else announce("Answer complete.");
  }
}

/** Redraw after a change of state (in place; the buttons that wait for it follow). */
function refresh(conversation, answer) {
  if (conversation !== current) return;
  const index = current.messages.indexOf(answer);
  if (index < 0) return;
  view.update(current, index, isBusy(current), connectionOf);
  view.setBusy(isBusy(current));
  autoscroll.changed();
  updateComposer();
}

/** Stop: the server cancels the generation (its upstream request is closed). */
async function stop(conversation, answer) {
  const state = tState(answer);
  state.stopRequested = true;
  if (answer.status !== "streaming" || !answer.generation) return; // run() stops it once it has an id
  try {
    await api.cancelGeneration(answer.generation.id);
    // The stream brings `done` with finish_reason "cancelled".
  } catch (error) {
    if (answer.status === "streaming") {
      answer.error = null;
      end(conversation, answer, "stopped");
      showNotice(`The server could not be told to stop: ${error.message}`);
    }
  }
}

function stopCurrent() {
  const answer = current.messages.findLast(
    (m) => m.role === "assistant" && (m.status === "pending" || m.status === "streaming"),
  );
  if (answer) stop(current, answer);
}

// ---------------------------------------------------------------- turns

function newAnswer() {
  return { role: "assistant", content: "", model: models.value(), status: "pending" };
}

function titleFrom(text) {
  const line = text.replace(/```[^\s`]*/g, " ").replace(/\s+/g, " ").trim();
  return line.length > 60 ? `${line.slice(0, 57)}…` : line || "New chat";
}

function send(text) {
  if (isBusy(current)) return false;
  if (preparing > 0) {
    showAttachError("Wait a moment: the pictures are still being prepared.");
    return false;
  }
  const attached = pending.slice();
  if (!text.trim() && !attached.length) return false;
  if (!settingsPanel.commitIfOpen()) return false;
  const conversation = current;
  if (!conversation.titled && conversation.messages.length === 0) {
    conversation.title = titleFrom(text || attached.map((image) => image.name).join(", "));
  }
  const user = { role: "user", content: text };
  if (attached.length) user.images = attached.map(images.reference);
  conversation.messages.push(user);
  const answer = newAnswer();
  conversation.messages.push(answer);
  cache.set(conversation.id, conversation);
  store.setOpenId(conversation.id);
  clearAttachments();
  renderConversation();
  const stored = images.putImages(conversation.id, attached).catch(() => {
    throw { code: "image_storage", message: "This browser would not store the pictures (storage full or disabled)." };
  });
  run(conversation, answer, { before: stored });
  return true;
}

/** Retry an error, or regenerate an answer, with the current model (a failed Continue continues again). */
function rerun(conversation, index, { retry = false } = {}) {
  if (isBusy(conversation)) return;
  const answer = conversation.messages[index];
  answer.model = models.value();
  renderConversation();
  run(conversation, answer, { continuing: retry && answer.continuing && Boolean(answer.content) });
}

/** After "Cut off at the token limit": ask the model to go on, appending to the same answer. */
function continueAnswer(conversation, index) {
  if (isBusy(conversation)) return;
  const answer = conversation.messages[index];
  renderConversation();
  run(conversation, answer, { continuing: true });
}

/** The picture ids a conversation's messages still refer to. */
function imageIds(conversation) {
  return conversation.messages.flatMap((m) => (m.images || []).map((image) => image.id));
}

/** Replace user turn `index` with `text`, drop what followed, and send again (its pictures stay). */
function editAndResend(conversation, index, text) {
  if (isBusy(conversation)) return;
  const edited = conversation.messages[index];
  conversation.messages.splice(index);
  if (index === 0 && !conversation.titled) conversation.title = titleFrom(text);
  const user = { role: "user", content: text };
  if (edited && edited.images) user.images = edited.images;
  conversation.messages.push(user);
  const answer = newAnswer();
  conversation.messages.push(answer);
  images.pruneImages(conversation.id, imageIds(conversation)).catch(() => {});
  renderConversation();
  run(conversation, answer);
}

// ---------------------------------------------------------------- conversations

function openConversation(id) {
  const conversation = id ? conversationById(id) : null;
  current = conversation || store.createConversation();
  cache.set(current.id, current);
  store.setOpenId(current.id);
  renderConversation();
  renderSidebar();
  els.prompt.focus();
}

function newChat() {
  if (current && current.messages.length === 0) {
    els.prompt.focus();
    return;
  }
  openConversation(null);
  sidebar.close();
}

function renameConversation(id, title) {
  const conversation = conversationById(id);
  if (!conversation) return;
  conversation.title = title;
  conversation.titled = true;
  store.saveConversation(conversation, { touch: false });
  if (conversation === current) els.title.textContent = title;
  renderSidebar();
}

function removeConversation(id) {
  const conversation = conversationById(id);
  if (conversation) {
    for (const message of conversation.messages) {
      if (message.role === "assistant" && message.status === "streaming") stop(conversation, message);
    }
  }
  cache.delete(id);
  store.deleteConversation(id);
  images.deleteConversationImages(id).catch(() => showNotice("The chat's pictures could not be deleted from this browser."));
  if (current && current.id === id) {
    const next = store.listConversations()[0];
    openConversation(next ? next.id : null);
  } else {
    renderSidebar();
  }
}

/** `/#gen_…`: a generation started elsewhere (the API, curl, another page), followed by its id. */
const FOLLOW_HASH = /^#(gen_[A-Za-z0-9_-]{8,200})$/;

/** Open the conversation that follows the generation named in the URL's hash (made the first time). */
async function followFromHash() {
  const match = FOLLOW_HASH.exec(location.hash);
  if (!match) return;
  const id = match[1];
  history.replaceState(null, "", location.pathname + location.search);
  for (const entry of store.listConversations()) {
    const known = conversationById(entry.id);
    if (known && known.messages.some((m) => m.generation && m.generation.id === id)) {
      openConversation(known.id);
      return;
    }
  }
  let state;
  try {
    state = await api.generationState(id);
  } catch (error) {
    if (error.code === "unauthorized") showAuthBanner();
    showNotice(`Generation ${id} cannot be followed: ${error.message}`);
    return;
  }
  const conversation = store.createConversation();
  conversation.title = `Generation ${id.slice(0, 12)}…`;
  conversation.titled = true;
  // Its request is not on the server to show: the conversation holds the answer alone.
  const answer = {
    role: "assistant",
    content: "",
    reasoning: "",
    toolCalls: [],
    refusal: "",
    model: state.model,
    status: "streaming",
    followed: true,
    deltas: 0,
    stats: { sentAt: Date.now() },
    generation: { id, eventsUrl: `/api/generations/${encodeURIComponent(id)}/events`, lastEventId: -1 },
  };
  conversation.messages.push(answer);
  cache.set(conversation.id, conversation);
  current = conversation;
  store.setOpenId(conversation.id);
  save(conversation);
  renderConversation();
  attach(conversation, answer);
}

/** After a reload: follow again every answer that was streaming. */
function resumeAll() {
  for (const entry of store.listConversations()) {
    const conversation = conversationById(entry.id);
    if (!conversation) continue;
    for (const message of conversation.messages) {
      if (message.role !== "assistant") continue;
      if (message.status === "streaming" && message.generation) {
        attach(conversation, message);
      } else if (message.status === "pending") {
        // Closed while POST /api/generations was in flight: whether it started is unknown.
        message.status = "error";
        message.error = { code: "interrupted", message: "Retry to ask again." };
        store.saveConversation(conversation, { touch: false });
      }
    }
  }
}

// ---------------------------------------------------------------- attachments

/** Pictures attached in the composer, ready to send: records from images.prepare(). */
let pending = [];
let preparing = 0;

function showAttachError(text) {
  els.attachError.textContent = text;
  els.attachError.hidden = !text;
}

function renderAttachments() {
  const items = pending.map((record) => {
    const item = document.createElement("li");
    item.className = "chip";
    const img = document.createElement("img");
    img.className = "thumb";
    img.src = record.thumb;
    img.alt = record.name;
    img.width = 56;
    img.height = 56;
    const info = document.createElement("span");
    info.className = "chip-info";
    const scaled = record.bytes < record.originalBytes ? ` (scaled from ${images.formatBytes(record.originalBytes)})` : "";
    info.textContent = `${record.width}×${record.height} · ${images.formatBytes(record.bytes)}${scaled}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "icon chip-remove";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove ${record.name}`);
    remove.addEventListener("click", () => {
      pending = pending.filter((other) => other !== record);
      renderAttachments();
      els.prompt.focus();
    });
    item.append(img, info, remove);
    return item;
  });
  if (preparing > 0) {
    const item = document.createElement("li");
    item.className = "chip preparing";
    item.textContent = `Preparing ${preparing} picture${preparing === 1 ? "" : "s"}…`;
    items.push(item);
  }
  els.attachments.replaceChildren(...items);
  els.attachments.hidden = items.length === 0;
}

function clearAttachments() {
  pending = [];
  showAttachError("");
  renderAttachments();
}

/** Attach pictures (from the button, a paste or a drop): scaled down, with a thumbnail each. */
async function attachFiles(files) {
  const list = [...files];
  if (!list.length) return;
  showAttachError("");
  preparing += list.length;
  renderAttachments();
  const problems = [];
  await Promise.all(
    list.map(async (file) => {
      try {
        const record = await images.prepare(file);
        images.rememberThumbnail(record.id, record.thumb);
        pending.push(record);
      } catch (error) {
        problems.push(error instanceof images.ImageError ? error.message : `“${file.name}” could not be attached.`);
      } finally {
        preparing -= 1;
      }
    }),
  );
  renderAttachments();
  showAttachError(problems.join(" "));
  if (!problems.length) announce(`${list.length} picture${list.length === 1 ? "" : "s"} attached.`);
}

els.attach.addEventListener("click", () => els.attachInput.click());
els.attachInput.addEventListener("change", () => {
  attachFiles(els.attachInput.files);
  els.attachInput.value = "";
});
els.prompt.addEventListener("paste", (event) => {
  const files = event.clipboardData ? [...event.clipboardData.files] : [];
  if (!files.length) return; // text: pasted as usual
  event.preventDefault();
  attachFiles(files);
});
const carriesFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
els.dropZone.addEventListener("dragover", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
  els.composer.classList.add("dragging");
});
els.dropZone.addEventListener("dragleave", (event) => {
  if (!els.dropZone.contains(/** @type {Node | null} */ (event.relatedTarget))) els.composer.classList.remove("dragging");
});
els.dropZone.addEventListener("drop", (event) => {
  els.composer.classList.remove("dragging");
  if (!event.dataTransfer || !event.dataTransfer.files.length) return;
  event.preventDefault();
  attachFiles(event.dataTransfer.files);
  els.prompt.focus();
});

// ---------------------------------------------------------------- export, import

async function exportConversation(kind) {
  flushSaves();
  const conversation = current;
  if (!conversation.messages.length) {
    showNotice("Nothing to export yet: this chat is empty.");
    return;
  }
  if (kind === "md") {
    transfer.download(transfer.fileName(conversation.title, "md"), "text/markdown", transfer.toMarkdown(conversation));
    return;
  }
  let records = [];
  try {
    records = await images.conversationImages(conversation.id);
  } catch (_) {
    showNotice("The chat's pictures could not be read: exported without them.");
  }
  const byId = new Map(records.map((record) => [record.id, record]));
  transfer.download(transfer.fileName(conversation.title, "json"), "application/json", transfer.toJson(conversation, byId));
}

async function importConversation(file) {
  let parsed;
  try {
    parsed = transfer.fromJson(await file.text());
  } catch (error) {
    showNotice(`“${file.name}” could not be imported: ${error.message}`);
    return;
  }
  try {
    await images.putImages(parsed.conversation.id, parsed.records);
  } catch (_) {
    showNotice("The chat was imported without its pictures: this browser would not store them.");
  }
  const conversation = parsed.conversation;
  cache.set(conversation.id, conversation);
  store.saveConversation(conversation);
  openConversation(conversation.id);
  sidebar.close();
  showNotice("");
  announce(`Imported “${conversation.title}”.`);
}

els.exportMd.addEventListener("click", () => exportConversation("md"));
els.exportJson.addEventListener("click", () => exportConversation("json"));
els.importButton.addEventListener("click", () => els.importInput.click());
els.importInput.addEventListener("change", () => {
  const file = els.importInput.files[0];
  els.importInput.value = "";
  if (file) importConversation(file);
});

// ---------------------------------------------------------------- composer

function autosize() {
  els.prompt.style.height = "auto";
  els.prompt.style.height = `${Math.min(els.prompt.scrollHeight, window.innerHeight * 0.4)}px`;
}

els.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  if (send(els.prompt.value)) {
    els.prompt.value = "";
    autosize();
  }
});

els.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    els.composer.requestSubmit();
  } else if (event.key === "Escape" && isBusy(current)) {
    stopCurrent();
  }
});
els.prompt.addEventListener("input", autosize);
els.stop.addEventListener("click", stopCurrent);
els.newChat.addEventListener("click", newChat);

els.authForm.addEventListener("submit", (event) => {
  event.preventDefault();
  api.setApiKey(els.authKey.value.trim());
  els.authKey.value = "";
  hideAuthBanner();
  models.refresh();
});

// Another tab changed a conversation this tab is not streaming: show its version.
window.addEventListener("storage", (event) => {
  if (!event.key || !event.key.startsWith("sluice.v1.")) return;
  if (event.key.startsWith(store.CONV_PREFIX)) {
    const id = event.key.slice(store.CONV_PREFIX.length);
    const mine = [...live.values()].some((entry) => entry.conversation.id === id);
    if (!mine) {
      cache.delete(id);
      if (current && current.id === id) {
        current = conversationById(id) || store.createConversation();
        renderConversation();
      }
    }
  }
  renderSidebar();
});

// Leaving (reload, close, sleep on a phone): write what streamed so far.
window.addEventListener("pagehide", flushSaves);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") flushSaves();
});

store.setStorageErrorHandler(showNotice);

// The seconds of a live "Thinking…" label advance while no token arrives.
setInterval(() => {
  if (current && isBusy(current)) view.tick(current);
}, 1000);

// ---------------------------------------------------------------- start

resumeAll();
openConversation(store.openId());
models.refresh();
followFromHash();
window.addEventListener("hashchange", followFromHash);
