// Sluice's chat page: the controller. It owns the conversations (kept in
// localStorage by store.js), starts each answer with POST /api/generations and
// follows its events (stream.js), so an answer survives a blip, a sleep or a
// reload; view.js draws, markdown.js renders, models.js fills the picker.

import * as api from "./api.js";
import { createModelPicker } from "./models.js";
import { createAutoscroll } from "./scroll.js";
import { createSidebar } from "./sidebar.js";
import * as store from "./store.js";
import { follow } from "./stream.js";
import { createView, errorHeadline } from "./view.js";

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
    retry: (index) => rerun(current, index),
    regenerate: (index) => rerun(current, index),
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

function renderConversation() {
  view.render(current, isBusy(current), connectionOf);
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

/** The messages sent for `answer`: everything before it that has content. */
function history(conversation, answer) {
  const index = conversation.messages.indexOf(answer);
  return conversation.messages
    .slice(0, index)
    .filter((m) => m.role === "user" || (m.role === "assistant" && m.content))
    .map((m) => ({ role: m.role, content: m.content }));
}

/** (Re)start `answer`: POST /api/generations, then follow its events. */
async function run(conversation, answer) {
  Object.assign(answer, {
    content: "",
    status: "pending",
    error: null,
    finishReason: null,
    usage: null,
    generation: null,
    deltas: 0,
    stats: { sentAt: Date.now() },
  });
  transient.set(answer, { connection: "open", stopRequested: false, reattach: 0 });
  save(conversation);
  refresh(conversation, answer);
  let started;
  try {
    started = await api.startGeneration(answer.model, history(conversation, answer));
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
  if (event.type === "delta") {
    if (!answer.stats.firstAt) answer.stats.firstAt = Date.now();
    answer.content += event.content;
    answer.deltas = (answer.deltas || 0) + 1;
    saveSoon(conversation);
    redraw(conversation, answer);
  } else if (event.type === "done") {
    answer.finishReason = event.finish_reason;
    answer.usage = event.usage || null;
    end(conversation, answer, event.finish_reason === "cancelled" ? "stopped" : "done");
  } else if (event.type === "error") {
    answer.error = event.error || { code: "upstream_error", message: "" };
    end(conversation, answer, "error");
  }
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
  answer.stats = { ...answer.stats, doneAt: Date.now() };
  save(conversation);
  refresh(conversation, answer);
  if (conversation === current) {
    if (status === "error") announce(`Error: ${errorHeadline(answer.error)} ${answer.error.message || ""}`);
    else if (status === "stopped") announce("Stopped.");
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
  if (isBusy(current) || !text.trim()) return false;
  const conversation = current;
  if (!conversation.titled && conversation.messages.length === 0) conversation.title = titleFrom(text);
  conversation.messages.push({ role: "user", content: text });
  const answer = newAnswer();
  conversation.messages.push(answer);
  cache.set(conversation.id, conversation);
  store.setOpenId(conversation.id);
  renderConversation();
  run(conversation, answer);
  return true;
}

/** Retry an error, or regenerate an answer, with the current model. */
function rerun(conversation, index) {
  if (isBusy(conversation)) return;
  const answer = conversation.messages[index];
  answer.model = models.value();
  renderConversation();
  run(conversation, answer);
}

/** Replace user turn `index` with `text`, drop what followed, and send again. */
function editAndResend(conversation, index, text) {
  if (isBusy(conversation)) return;
  conversation.messages.splice(index);
  if (index === 0 && !conversation.titled) conversation.title = titleFrom(text);
  conversation.messages.push({ role: "user", content: text });
  const answer = newAnswer();
  conversation.messages.push(answer);
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
  if (current && current.id === id) {
    const next = store.listConversations()[0];
    openConversation(next ? next.id : null);
  } else {
    renderSidebar();
  }
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

// ---------------------------------------------------------------- start

resumeAll();
openConversation(store.openId());
models.refresh();
