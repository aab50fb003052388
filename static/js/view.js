// The conversation's messages as DOM. The view holds no state of its own: it
// draws a conversation, and redraws one answer while it streams.

import { thumbnail } from "./images.js";
import { copyText, renderMarkdown } from "./markdown.js";
import { describe as describeSettings } from "./settings.js";

/** Headline and hint for an error code (the server's message is shown below it). */
const ERRORS = {
  unauthorized: "This server needs an API key.",
  rate_limited: "Too many requests for now.",
  upstream_unavailable: "The model's provider cannot be reached.",
  upstream_error: "The model's provider answered with an error.",
  upstream_timeout: "The model took too long to answer.",
  model_not_found: "This model is not available.",
  overloaded: "Sluice is busy.",
  server_shutting_down: "Sluice is restarting.",
  generation_lost: "The answer was lost on the server.",
  generation_not_found: "This answer is no longer on the server.",
  interrupted: "The page was closed before the answer started.",
  network_error: "Sluice cannot be reached.",
  payload_too_large: "This conversation (with its pictures) is too large to send.",
  invalid_request: "Sluice refused the request.",
  image_missing: "A picture of this conversation is gone from this browser.",
  image_storage: "The pictures could not be kept.",
};

export function errorHeadline(error) {
  // A picture the model or the server cannot take: say it is the picture.
  if (error.code === "invalid_request" && /image_url|image/i.test(error.message || "")) return "This picture was refused.";
  return ERRORS[error.code] || "Something went wrong.";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(text, className, onClick, label) {
  const node = element("button", className, text);
  node.type = "button";
  if (label) node.setAttribute("aria-label", label);
  node.addEventListener("click", onClick);
  return node;
}

/** "demo/echo · first token 85 ms · 41.2 tokens/s · 14 tokens" */
export function statsLine(answer, connection) {
  const parts = [answer.model];
  const stats = answer.stats || {};
  if (stats.firstAt && stats.sentAt) parts.push(`first token ${Math.max(0, stats.firstAt - stats.sentAt)} ms`);
  // This generation's tokens (the rate is theirs); the count adds those of the parts before a Continue.
  const tokens = (answer.usage && answer.usage.completion_tokens) || answer.deltas || 0;
  const total = tokens + (answer.priorTokens || 0);
  if (answer.status === "streaming" || answer.status === "pending") {
    parts.push(connection === "reconnecting" ? "connection lost, reconnecting…" : "streaming…");
  } else if (tokens) {
    const seconds = stats.doneAt && stats.firstAt ? (stats.doneAt - stats.firstAt) / 1000 : 0;
    if (seconds > 0 && tokens > 1) parts.push(`${(tokens / seconds).toFixed(1)} tokens/s`);
    parts.push(`${total} token${total === 1 ? "" : "s"}`);
  }
  if (answer.status === "stopped") parts.push("stopped");
  return parts.join(" · ");
}

/** Whole seconds between two times, at least 1 (a thought took some time). */
function seconds(from, to) {
  return Math.max(1, Math.round((to - from) / 1000));
}

/** "Thinking… 3 s" while it thinks, "Thought for 4 s" once the answer began. */
export function thinkingLabel(answer, now = Date.now()) {
  const thinking = answer.thinking || {};
  if (isThinking(answer)) return `Thinking… ${thinking.startedAt ? Math.floor((now - thinking.startedAt) / 1000) : 0} s`;
  if (thinking.startedAt && thinking.endedAt) return `Thought for ${seconds(thinking.startedAt, thinking.endedAt)} s`;
  return "Thought";
}

/** The answer's reasoning is still arriving (nothing else has yet). */
export function isThinking(answer) {
  const live = answer.status === "pending" || answer.status === "streaming";
  return live && Boolean(answer.reasoning) && !(answer.thinking && answer.thinking.endedAt);
}

/** A tool call's arguments, pretty-printed when they are (already) whole JSON. */
export function prettyArguments(text) {
  if (!text) return "{}";
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (_) {
    return text;
  }
}

/**
 * @param {object} elements
 * @param {HTMLOListElement} elements.list
 * @param {HTMLElement} elements.empty shown when the conversation has no message
 * @param {object} actions callbacks: retry(i), regenerate(i), edit(i, text), stop(i), useKey(key, i)
 */
export function createView({ list, empty }, actions) {
  /** Per-answer transient state (connection) lives in the controller; it is passed in. */
  let busy = false;
  /** Answers whose thoughts the reader opened after they folded (kept across full redraws). */
  const openedThoughts = new WeakSet();

  function userItem(message, index) {
    const item = element("li", "msg user");
    item.dataset.index = String(index);
    const bubble = element("div", "bubble");
    bubble.append(element("span", "visually-hidden", "You said:"));
    if (message.images && message.images.length) bubble.append(attachmentList(message.images));
    if (message.content) bubble.append(element("div", "text", message.content));
    const tools = element("div", "actions");
    const edit = button("Edit", "ghost", () => editForm(item, message, index), "Edit and resend this message");
    edit.disabled = busy;
    tools.append(edit);
    item.append(bubble, tools);
    return item;
  }

  /** The thumbnails of a sent message (the pixels come from IndexedDB). */
  function attachmentList(images) {
    const list = element("ul", "attachments");
    list.setAttribute("aria-label", `${images.length} attached image${images.length === 1 ? "" : "s"}`);
    for (const image of images) {
      const item = element("li", "attachment");
      const img = element("img", "thumb");
      img.alt = `Attached image: ${image.name}`;
      img.decoding = "async";
      thumbnail(image.id).then((url) => {
        if (url) img.src = url;
        else item.replaceChildren(element("span", "thumb missing", `${image.name} (no longer stored)`));
      });
      item.title = `${image.name} · ${image.width}×${image.height}`;
      item.append(img);
      list.append(item);
    }
    return list;
  }

  function editForm(item, message, index) {
    const form = element("form", "edit-form");
    const area = element("textarea");
    area.value = message.content;
    area.rows = Math.min(10, message.content.split("\n").length + 1);
    area.setAttribute("aria-label", "Edit your message");
    const send = element("button", "primary", "Send");
    send.type = "submit";
    const cancel = button("Cancel", "ghost", () => item.replaceWith(userItem(message, index)));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = area.value.trim();
      if (text) actions.edit(index, text);
    });
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      } else if (event.key === "Escape") {
        cancel.click();
      }
    });
    const row = element("div", "actions");
    row.append(send, cancel);
    form.append(area, row);
    item.replaceChildren(form);
    area.focus();
  }

  function errorBox(answer, index) {
    const box = element("div", "error-box");
    box.setAttribute("role", "alert");
    box.append(element("strong", "", errorHeadline(answer.error)));
    const detail = [answer.error.message];
    if (answer.error.retryAfter) detail.push(`Try again in ${answer.error.retryAfter} s.`);
    box.append(element("p", "error-detail", detail.filter(Boolean).join(" ")));
    if (answer.error.code === "unauthorized") {
      const form = element("form", "key-form");
      const label = element("label", "", "API key");
      const input = element("input");
      input.type = "password";
      input.autocomplete = "off";
      input.name = "api-key";
      input.required = true;
      label.append(input);
      const use = element("button", "primary", "Use key and retry");
      use.type = "submit";
      form.append(label, use);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        actions.useKey(input.value.trim(), index);
      });
      box.append(form);
    } else if (!answer.followed) {
      const retry = button("Retry", "primary retry", () => actions.retry(index));
      retry.disabled = busy;
      box.append(retry);
    }
    return box;
  }

  /** The "Thinking…" block, kept across redraws (so a reader's open/closed choice stays). */
  function drawThinking(bubble, body, answer) {
    let block = bubble.querySelector(":scope > details.thinking");
    if (!answer.reasoning) {
      if (block) block.remove();
      return;
    }
    const thinking = isThinking(answer);
    if (!block) {
      block = element("details", "thinking");
      const summary = element("summary");
      summary.append(element("span", "thinking-label"));
      block.append(summary, element("div", "thinking-text"));
      block.open = thinking || openedThoughts.has(answer);
      block.addEventListener("toggle", () => {
        if (block.dataset.phase !== "done") return;
        if (block.open) openedThoughts.add(answer);
        else openedThoughts.delete(answer);
      });
      bubble.insertBefore(block, body);
    } else if (block.dataset.phase === "live" && !thinking) {
      block.open = false; // the answer began: fold the thoughts away
    }
    block.dataset.phase = thinking ? "live" : "done";
    block.dataset.startedAt = String((answer.thinking && answer.thinking.startedAt) || Date.now());
    block.querySelector(".thinking-label").textContent = thinkingLabel(answer);
    const text = block.querySelector(".thinking-text");
    if (text.textContent !== answer.reasoning) text.textContent = answer.reasoning;
  }

  /** Tool calls as cards: the function's name and its arguments, pretty-printed. */
  function toolCards(answer) {
    const box = element("div", "tool-calls");
    for (const call of answer.toolCalls || []) {
      if (!call) continue;
      const card = element("section", "tool-call");
      card.setAttribute("aria-label", `Tool call: ${call.name || "function"}`);
      const head = element("div", "tool-head");
      head.append(element("span", "tool-kind", "Tool call"), element("code", "tool-name", call.name || "?"));
      if (call.id) head.append(element("span", "tool-id", call.id));
      const pre = element("pre", "tool-args");
      pre.append(element("code", "", prettyArguments(call.arguments)));
      card.append(head, pre);
      box.append(card);
    }
    return box;
  }

  /** A refusal, shown as one (not as an answer). */
  function refusalBox(answer) {
    const box = element("div", "refusal-box");
    box.setAttribute("role", "note");
    box.append(element("strong", "", "The model refused to answer."));
    box.append(element("p", "refusal-text", answer.refusal));
    return box;
  }

  /** Why an answer ended early: the token limit (with Continue) or the content filter. */
  function finishNote(answer, index, isLast) {
    if (answer.status !== "done") return null;
    if (answer.finishReason === "length") {
      const note = element("div", "finish-note length");
      note.setAttribute("role", "note");
      note.append(element("span", "", "Cut off at the token limit."));
      if (isLast && !answer.followed) {
        const more = button("Continue", "primary continue", () => actions.continue(index), "Continue this answer");
        more.disabled = busy;
        note.append(more);
      }
      return note;
    }
    if (answer.finishReason === "content_filter") {
      const note = element("div", "finish-note filtered");
      note.setAttribute("role", "note");
      note.append(element("strong", "", "Stopped by the provider's content filter."));
      note.append(element("span", "", answer.content ? " What came before it is shown above." : " Nothing was answered."));
      return note;
    }
    return null;
  }

  /** Everything after the text: tool cards, refusal, why it ended, errors, stats, settings. */
  function drawTail(bubble, body, answer, index, isLast, connection) {
    while (body.nextSibling) body.nextSibling.remove();
    if (answer.toolCalls && answer.toolCalls.length) bubble.append(toolCards(answer));
    if (answer.refusal) bubble.append(refusalBox(answer));
    const note = finishNote(answer, index, isLast);
    if (note) bubble.append(note);
    if (answer.status === "error" && answer.error) bubble.append(errorBox(answer, index));
    bubble.append(element("p", "meta", statsLine(answer, connection)));
    const used = describeSettings(answer.settings);
    if (used) bubble.append(element("p", "meta settings-used", `Settings: ${used}`));
  }

  /** Fill an answer's `<li>`; its `.md` node is kept across redraws (a live region must stay put). */
  function fillAnswer(item, answer, index, isLast, connection) {
    const live = answer.status === "pending" || answer.status === "streaming";
    item.className = `msg assistant ${answer.status}`;
    item.dataset.index = String(index);
    item.dataset.state = answer.status;
    let bubble = item.querySelector(":scope > .bubble");
    let body = bubble && bubble.querySelector(":scope > .md");
    if (!body) {
      bubble = element("div", "bubble");
      bubble.append(element("span", "visually-hidden", "Sluice answered:"));
      body = element("div", "md");
      // Announced politely, once complete: aria-busy holds the announcement while it streams.
      body.setAttribute("aria-live", "polite");
      bubble.append(body);
      item.replaceChildren(bubble);
    }
    body.setAttribute("aria-busy", String(live));
    drawThinking(bubble, body, answer);
    const caret = live && !isThinking(answer);
    if (answer.content || caret) renderMarkdown(body, answer.content, { live: caret });
    else body.replaceChildren();
    item.classList.toggle("has-text", Boolean(answer.content));
    drawTail(bubble, body, answer, index, isLast, connection);

    while (bubble.nextSibling) bubble.nextSibling.remove();
    const tools = element("div", "actions");
    if (answer.content) {
      tools.append(button("Copy", "ghost", (event) => copyText(answer.content, event.currentTarget), "Copy this answer"));
    }
    // A generation followed by id has no request here to send again.
    if (isLast && !live && answer.status !== "error" && !answer.followed) {
      const again = button("Regenerate", "ghost regenerate", () => actions.regenerate(index), "Regenerate this answer");
      again.disabled = busy;
      tools.append(again);
    }
    if (tools.childElementCount) item.append(tools);
    return item;
  }

  function itemFor(conversation, index, connectionOf) {
    const message = conversation.messages[index];
    if (message.role === "user") return userItem(message, index);
    const isLast = index === conversation.messages.length - 1;
    return fillAnswer(element("li"), message, index, isLast, connectionOf(message));
  }

  return {
    /** Draw the whole conversation. */
    render(conversation, isBusy, connectionOf) {
      busy = isBusy;
      const items = conversation.messages.map((_, index) => itemFor(conversation, index, connectionOf));
      list.replaceChildren(...items);
      empty.hidden = items.length > 0;
    },
    /** Redraw one answer in place (it streams, or its state changed). */
    update(conversation, index, isBusy, connectionOf) {
      busy = isBusy;
      const old = /** @type {HTMLElement | null} */ (list.querySelector(`li[data-index="${index}"]`));
      const message = conversation.messages[index];
      if (!old || message.role !== "assistant") {
        this.render(conversation, isBusy, connectionOf);
        return;
      }
      if (old.dataset.state === "streaming" && message.status === "streaming") {
        // More of it: the thoughts, the text and what follows change; the nodes stay.
        const bubble = /** @type {HTMLElement} */ (old.querySelector(":scope > .bubble"));
        const body = /** @type {HTMLElement} */ (bubble.querySelector(":scope > .md"));
        drawThinking(bubble, body, message);
        const caret = !isThinking(message);
        if (message.content || caret) renderMarkdown(body, message.content, { live: caret });
        old.classList.toggle("has-text", Boolean(message.content));
        drawTail(bubble, body, message, index, index === conversation.messages.length - 1, connectionOf(message));
        return;
      }
      fillAnswer(old, message, index, index === conversation.messages.length - 1, connectionOf(message));
    },
    /** Advance the seconds of every live "Thinking…" label. */
    tick(conversation) {
      for (const block of list.querySelectorAll('details.thinking[data-phase="live"]')) {
        const index = Number(block.closest("li").dataset.index);
        const answer = conversation.messages[index];
        if (answer) block.querySelector(".thinking-label").textContent = thinkingLabel(answer);
      }
    },
    /** Enable or disable what must wait while an answer streams (Edit, Retry, Regenerate, Continue). */
    setBusy(isBusy) {
      busy = isBusy;
      for (const control of list.querySelectorAll(".msg.user .actions button, .retry, .regenerate, .continue")) {
        /** @type {HTMLButtonElement} */ (control).disabled = isBusy;
      }
    },
  };
}
