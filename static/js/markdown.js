// Markdown → sanitised DOM, with highlighted code blocks and copy buttons.
//
// markdown-it parses (raw HTML off: a model's `<script>` is shown as text),
// highlight.js colours fenced code, DOMPurify sanitises the result before it
// touches the page. Images become links: a model's `![](https://…)` must not
// make the browser fetch anything (that would leak the conversation in a URL).

/* global markdownit, DOMPurify, hljs */

const md = markdownit({
  html: false,
  linkify: true,
  breaks: false,
  highlight(code, lang) {
    const language = (lang || "").trim().toLowerCase();
    if (language && hljs.getLanguage(language)) {
      try {
        return hljs.highlight(code, { language, ignoreIllegals: true }).value;
      } catch (_) {
        // fall through: plain, escaped by markdown-it
      }
    }
    return "";
  },
});

md.renderer.rules.image = (tokens, idx) => {
  const token = tokens[idx];
  const src = md.utils.escapeHtml(token.attrGet("src") || "");
  const alt = md.utils.escapeHtml(token.content || "image");
  return `<a href="${src}" class="image-link">Image: ${alt}</a>`;
};

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_ATTR: ["style"],
  FORBID_TAGS: ["style", "img", "svg", "math", "form", "input", "button", "textarea", "select", "iframe"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#|\/(?!\/))/i,
  RETURN_DOM_FRAGMENT: true,
};

// Table alignment arrives as style="text-align:…": make it a class instead, so
// no style attribute is ever produced (the page's CSP allows none).
md.core.ruler.push("align_classes", (state) => {
  for (const token of state.tokens) {
    if (token.type !== "th_open" && token.type !== "td_open") continue;
    const style = token.attrGet("style");
    const align = style && /text-align:(left|right|center)/.exec(style);
    if (!style) continue;
    token.attrs = token.attrs.filter(([name]) => name !== "style");
    if (align) token.attrJoin("class", `align-${align[1]}`);
  }
});

// Links open in a new tab and pass nothing to the target.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/**
 * Render `source` into `container` (replacing what it held).
 * @param {HTMLElement} container
 * @param {string} source markdown
 * @param {{live?: boolean}} [options] live: add the streaming caret at the end
 */
export function renderMarkdown(container, source, { live = false } = {}) {
  const fragment = DOMPurify.sanitize(md.render(source), PURIFY);
  container.replaceChildren(fragment);
  if (live) appendCaret(container);
  for (const pre of container.querySelectorAll("pre")) decorateCode(pre);
}

/** The blinking caret, in the last element that holds text. */
function appendCaret(container) {
  let target = container;
  while (target.lastElementChild && !["BR", "HR"].includes(target.lastElementChild.tagName)) {
    target = target.lastElementChild;
  }
  const caret = document.createElement("span");
  caret.className = "caret";
  caret.setAttribute("aria-hidden", "true");
  target.appendChild(caret);
}

/** Wrap a code block with its language and a Copy button. */
function decorateCode(pre) {
  const code = pre.querySelector("code");
  const match = code && /(?:^|\s)language-(\S+)/.exec(code.className);
  if (code) code.classList.add("hljs");
  const figure = document.createElement("div");
  figure.className = "code-block";
  const bar = document.createElement("div");
  bar.className = "code-bar";
  const label = document.createElement("span");
  label.textContent = match ? match[1] : "code";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy-code";
  button.textContent = "Copy";
  button.setAttribute("aria-label", `Copy ${label.textContent} code`);
  button.addEventListener("click", () => copyText((code || pre).textContent, button));
  bar.append(label, button);
  pre.replaceWith(figure);
  figure.append(bar, pre);
}

/**
 * Copy `text` to the clipboard and say so on `button` for a moment.
 * Falls back to a hidden textarea where the Clipboard API is unavailable (plain http).
 */
export async function copyText(text, button) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch (_) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    try {
      ok = document.execCommand("copy");
    } catch (__) {
      ok = false;
    }
    area.remove();
  }
  if (button) {
    const before = button.dataset.label || button.textContent;
    button.dataset.label = before;
    button.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => {
      button.textContent = before;
    }, 1500);
  }
  return ok;
}
