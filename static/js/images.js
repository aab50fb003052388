// Pictures the user attaches: read, scaled down in the browser, and kept in
// IndexedDB (not localStorage: a few photos would fill its ~5 MB quota).
//
//   IndexedDB "sluice", store "images", key "id", index "conversation":
//   {id, conversation, name, type, width, height, bytes, url, thumb}
//
// `url` is the `data:` URL sent to the model (as an `image_url` part); `thumb`
// a small JPEG `data:` URL shown in the composer and in the sent message. A
// conversation's messages hold only `{id, name, type, width, height, bytes}`.

const DB_NAME = "sluice";
const STORE = "images";

/** Types a model's provider takes as they are (SVG is refused: it is a document, not a picture). */
export const ACCEPTED_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"];
/** Longest side sent to a model; larger pictures are scaled down to it. */
export const MAX_SIDE = 2048;
/** Smaller files within MAX_SIDE are sent byte for byte; larger ones are re-encoded as JPEG. */
const KEEP_BYTES = 1_500_000;
/** Files above this are not even read. */
export const MAX_INPUT_BYTES = 40 * 1024 * 1024;
/** What may be sent after scaling (the server takes 32 MB bodies, base64 adds a third). */
const MAX_OUTPUT_BYTES = 8 * 1024 * 1024;
const THUMB_SIDE = 320;
const JPEG_QUALITY = 0.85;

/** A picture that cannot be attached; the message says why, for the person. */
export class ImageError extends Error {}

let opening = null;

function openDb() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => {
        const store = request.result.createObjectStore(STORE, { keyPath: "id" });
        store.createIndex("conversation", "conversation");
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => {
        opening = null;
        reject(request.error);
      };
    });
  }
  return opening;
}

function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function transaction(mode, work) {
  const db = await openDb();
  const tx = db.transaction(STORE, mode);
  const result = work(tx.objectStore(STORE));
  await new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("aborted"));
  });
  return result;
}

/** Keep `records` (from prepare()) for `conversationId`. */
export async function putImages(conversationId, records) {
  if (!records.length) return;
  await transaction("readwrite", (store) => {
    for (const record of records) store.put({ ...record, conversation: conversationId });
  });
}

/** The stored record for `id`, or null. */
export async function getImage(id) {
  const db = await openDb();
  return (await done(db.transaction(STORE).objectStore(STORE).get(id))) || null;
}

/** All records of a conversation. */
export async function conversationImages(conversationId) {
  const db = await openDb();
  return done(db.transaction(STORE).objectStore(STORE).index("conversation").getAll(conversationId));
}

/** Forget a conversation's pictures (it was deleted). */
export async function deleteConversationImages(conversationId) {
  const keys = await (async () => {
    const db = await openDb();
    return done(db.transaction(STORE).objectStore(STORE).index("conversation").getAllKeys(conversationId));
  })();
  await transaction("readwrite", (store) => {
    for (const key of keys) store.delete(key);
  });
}

/** Forget a conversation's pictures that no message refers to any more (after an edit). */
export async function pruneImages(conversationId, keepIds) {
  const keep = new Set(keepIds);
  const records = await conversationImages(conversationId);
  const drop = records.filter((record) => !keep.has(record.id)).map((record) => record.id);
  if (!drop.length) return;
  await transaction("readwrite", (store) => {
    for (const id of drop) store.delete(id);
  });
}

function readAsDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function canvasBlob(canvas, type, quality) {
  return new Promise((resolve) => canvas.toBlob(resolve, type, quality));
}

async function drawScaled(bitmap, side, type, quality) {
  const scale = Math.min(1, side / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  const context = canvas.getContext("2d");
  if (type === "image/jpeg") {
    // JPEG has no transparency: what was transparent becomes white, not black.
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
  }
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const blob = await canvasBlob(canvas, type, quality);
  if (!blob) throw new ImageError("The browser could not re-encode this picture.");
  return { blob, width: canvas.width, height: canvas.height };
}

export function formatBytes(bytes) {
  if (bytes >= 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  if (bytes >= 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${bytes} bytes`;
}

/**
 * Read `file` and make it sendable: within MAX_SIDE, re-encoded as JPEG when it
 * is large, with a thumbnail.
 * @param {File} file
 * @returns {Promise<{id, name, type, width, height, bytes, originalBytes, url, thumb}>}
 * @throws {ImageError} a type or size that cannot be attached
 */
export async function prepare(file) {
  const name = file.name || "pasted image";
  if (!ACCEPTED_TYPES.includes(file.type)) {
    throw new ImageError(`“${name}” is not a picture that can be attached: use PNG, JPEG, WebP or GIF.`);
  }
  if (file.size > MAX_INPUT_BYTES) {
    throw new ImageError(`“${name}” is too large (${formatBytes(file.size)}; at most ${formatBytes(MAX_INPUT_BYTES)}).`);
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (_) {
    throw new ImageError(`“${name}” could not be read as a picture.`);
  }
  try {
    const fits = Math.max(bitmap.width, bitmap.height) <= MAX_SIDE;
    let blob = file;
    let { width, height } = bitmap;
    let type = file.type;
    if (!fits || file.size > KEEP_BYTES) {
      ({ blob, width, height } = await drawScaled(bitmap, MAX_SIDE, "image/jpeg", JPEG_QUALITY));
      type = "image/jpeg";
      if (blob.size > MAX_OUTPUT_BYTES) {
        ({ blob, width, height } = await drawScaled(bitmap, MAX_SIDE / 2, "image/jpeg", 0.7));
      }
    }
    if (blob.size > MAX_OUTPUT_BYTES) {
      throw new ImageError(`“${name}” is still too large after scaling (${formatBytes(blob.size)}).`);
    }
    const thumb = await drawScaled(bitmap, THUMB_SIDE, "image/jpeg", 0.8);
    return {
      id: `img_${crypto.getRandomValues(new Uint32Array(3)).join("")}`,
      name,
      type,
      width,
      height,
      bytes: blob.size,
      originalBytes: file.size,
      url: await readAsDataUrl(blob),
      thumb: await readAsDataUrl(thumb.blob),
    };
  } finally {
    bitmap.close();
  }
}

/** The part of a record a message keeps (the pixels stay in IndexedDB). */
export function reference(record) {
  const { id, name, type, width, height, bytes } = record;
  return { id, name, type, width, height, bytes };
}

const thumbs = new Map();

/** A thumbnail `data:` URL for `id` (cached), or "" when it is gone. */
export async function thumbnail(id) {
  if (thumbs.has(id)) return thumbs.get(id);
  let record = null;
  try {
    record = await getImage(id);
  } catch (_) {
    record = null;
  }
  const url = record ? record.thumb : "";
  if (url) thumbs.set(id, url);
  return url;
}

/** Remember a thumbnail already in memory (just attached). */
export function rememberThumbnail(id, url) {
  thumbs.set(id, url);
}
