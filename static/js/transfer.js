// A conversation out of the browser and back: Markdown to read, JSON to import.
//
// The JSON holds what the page keeps (messages with their reasoning, tool calls,
// refusals, finish reasons, usage and settings; the conversation's settings)
// plus each attached picture inline as its `data:` URL, so an import on another
// browser gets the pictures too:
//
//   {"format": "sluice.conversation", "version": 1, "exported": "2026-…Z",
//    "conversation": {"title", "created", "updated", "settings",
//                     "messages": [{"role": "user", "content", "images": [{name, type, width, height, bytes, url, thumb}]},
//                                  {"role": "assistant", "content", "model", "reasoning", …}]}}

import { newId } from "./store.js";

export const FORMAT = "sluice.conversation";
const VERSION = 1;
/** Fields of an answer that only mean something while it streams on this server. */
const TRANSIENT = ["generation", "continuing"];

/** A file name from a title: "My chat: part 2" → "my-chat-part-2". */
export function fileName(title, extension) {
  const slug = (title || "chat")
    .toLowerCase()
    .normalize("NFKD")
    .replace(/[^\p{L}\p{N}]+/gu, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 60);
  return `${slug || "chat"}.${extension}`;
}

function fence(text, info = "") {
  const longest = Math.max(2, ...[...text.matchAll(/`+/g)].map((m) => m[0].length));
  const ticks = "`".repeat(longest + 1);
  return `${ticks}${info}\n${text}\n${ticks}`;
}

function quote(text) {
  return text
    .split("\n")
    .map((line) => (line ? `> ${line}` : ">"))
    .join("\n");
}

/** The conversation as Markdown, for people (pictures are named, not embedded). */
export function toMarkdown(conversation) {
  const out = [`# ${conversation.title}`, ""];
  const settings = conversation.settings || {};
  const used = [];
  if (settings.temperature !== null && settings.temperature !== undefined) used.push(`temperature ${settings.temperature}`);
  if (settings.maxTokens) used.push(`max tokens ${settings.maxTokens}`);
  if (settings.extra) used.push(`extra \`${JSON.stringify(settings.extra)}\``);
  if (used.length) out.push(`*Settings: ${used.join(", ")}*`, "");
  if (settings.system) out.push("## System", "", settings.system, "");
  for (const message of conversation.messages) {
    if (message.role === "user") {
      out.push("## You", "");
      for (const image of message.images || []) out.push(`*[image: ${image.name}, ${image.width}×${image.height}]*`, "");
      if (message.content) out.push(message.content, "");
      continue;
    }
    out.push(`## Assistant${message.model ? ` (${message.model})` : ""}`, "");
    if (message.reasoning) out.push(quote(`**Thinking**\n\n${message.reasoning}`), "");
    if (message.content) out.push(message.content, "");
    for (const call of message.toolCalls || []) {
      let args = call.arguments || "";
      try {
        args = JSON.stringify(JSON.parse(args), null, 2);
      } catch (_) {
        // partial or not JSON: as it came
      }
      out.push(`**Tool call** \`${call.name}\`${call.id ? ` (${call.id})` : ""}`, "", fence(args, "json"), "");
    }
    if (message.refusal) out.push(`**Refused:** ${message.refusal}`, "");
    if (message.finishReason === "length") out.push("*Cut off at the token limit.*", "");
    if (message.finishReason === "content_filter") out.push("*Stopped by the provider's content filter.*", "");
    if (message.status === "stopped") out.push("*Stopped.*", "");
    if (message.status === "error" && message.error) out.push(`*Error: ${message.error.code} ${message.error.message || ""}*`, "");
  }
  return `${out.join("\n").trimEnd()}\n`;
}

/**
 * The conversation as JSON, its pictures inline.
 * @param {object} conversation
 * @param {Map<string, object>} records the conversation's image records by id
 */
export function toJson(conversation, records) {
  const messages = conversation.messages.map((message) => {
    const copy = structuredClone(message);
    for (const key of TRANSIENT) delete copy[key];
    if (copy.images) {
      copy.images = copy.images.map((image) => {
        const record = records.get(image.id);
        const { id: _id, ...rest } = image;
        return record ? { ...rest, url: record.url, thumb: record.thumb } : rest;
      });
    }
    return copy;
  });
  const { title, created, updated, settings } = conversation;
  return JSON.stringify(
    { format: FORMAT, version: VERSION, exported: new Date().toISOString(), conversation: { title, created, updated, settings, messages } },
    null,
    2,
  );
}

/** A file that is not a conversation the page can import. */
export class ImportError extends Error {}

function text(value) {
  return typeof value === "string" ? value : "";
}

/** Only the picture types the page attaches itself, as base64 `data:` URLs. */
const PICTURE_URL = /^data:image\/(?:png|jpeg|webp|gif);base64,/;

/** An imported file's settings, kept only where each has the type the page gives it. */
function importedSettings(raw) {
  if (!raw || typeof raw !== "object") return null;
  const settings = {
    system: text(raw.system),
    temperature: Number.isFinite(raw.temperature) ? raw.temperature : null,
    maxTokens: Number.isInteger(raw.maxTokens) && raw.maxTokens > 0 ? raw.maxTokens : null,
    extra: raw.extra && typeof raw.extra === "object" && !Array.isArray(raw.extra) ? raw.extra : null,
  };
  return settings.system || settings.temperature !== null || settings.maxTokens || settings.extra ? settings : null;
}

/**
 * Read an exported conversation.
 * @param {string} source the file's text
 * @returns {{conversation: object, records: object[]}} a new conversation (new ids) and its image records
 * @throws {ImportError}
 */
export function fromJson(source) {
  let data;
  try {
    data = JSON.parse(source);
  } catch (_) {
    throw new ImportError("This file is not JSON.");
  }
  if (!data || data.format !== FORMAT || !data.conversation || !Array.isArray(data.conversation.messages)) {
    throw new ImportError("This JSON is not a conversation exported by Sluice.");
  }
  const input = data.conversation;
  const now = Date.now();
  const conversation = {
    id: newId(),
    title: text(input.title) || "Imported chat",
    titled: true,
    created: Number(input.created) || now,
    updated: now,
    messages: [],
  };
  const settings = importedSettings(input.settings);
  if (settings) conversation.settings = settings;
  const records = [];
  for (const raw of input.messages) {
    if (!raw || (raw.role !== "user" && raw.role !== "assistant")) continue;
    const message = structuredClone(raw);
    message.content = text(raw.content);
    for (const key of TRANSIENT) delete message[key];
    if (message.role === "user") {
      const images = [];
      for (const image of Array.isArray(raw.images) ? raw.images : []) {
        if (!image || !PICTURE_URL.test(image.url)) continue;
        const id = `img_${newId()}`;
        const ref = {
          id,
          name: text(image.name) || "image",
          type: text(image.type) || image.url.slice(5, image.url.indexOf(";")),
          width: Number(image.width) || 0,
          height: Number(image.height) || 0,
          bytes: Number(image.bytes) || 0,
        };
        records.push({ ...ref, url: image.url, thumb: PICTURE_URL.test(image.thumb) ? image.thumb : image.url });
        images.push(ref);
      }
      if (images.length) message.images = images;
      else delete message.images;
    } else if (message.status === "pending" || message.status === "streaming") {
      // It was still arriving when exported: what came is kept, as if stopped.
      message.status = "stopped";
    } else if (!message.status) {
      message.status = "done";
    }
    conversation.messages.push(message);
  }
  return { conversation, records };
}

/** Offer `text` as a download named `name`. */
export function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
