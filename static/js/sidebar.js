// The sidebar's list of conversations: open, rename in place, delete with a
// confirmation in place (no browser dialogs), and a drawer on narrow screens.

/**
 * @param {object} elements
 * @param {HTMLUListElement} elements.list
 * @param {HTMLElement} elements.sidebar
 * @param {HTMLButtonElement} elements.menuButton
 * @param {HTMLElement} elements.scrim
 * @param {object} actions
 * @param {(id: string) => void} actions.open
 * @param {(id: string, title: string) => void} actions.rename
 * @param {(id: string) => void} actions.remove
 */
export function createSidebar({ list, sidebar, menuButton, scrim }, actions) {
  const narrow = window.matchMedia("(max-width: 760px)");

  function setDrawer(open) {
    sidebar.classList.toggle("open", open);
    scrim.hidden = !open;
    menuButton.setAttribute("aria-expanded", String(open));
    if (open) {
      const current = /** @type {HTMLElement | null} */ (
        list.querySelector("[aria-current] .conv-open") || sidebar.querySelector("button")
      );
      if (current) current.focus();
    }
  }

  menuButton.addEventListener("click", () => setDrawer(!sidebar.classList.contains("open")));
  scrim.addEventListener("click", () => setDrawer(false));
  sidebar.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && sidebar.classList.contains("open")) {
      setDrawer(false);
      menuButton.focus();
    }
  });

  function button(className, text, label, onClick) {
    const element = document.createElement("button");
    element.type = "button";
    element.className = className;
    element.textContent = text;
    if (label) element.setAttribute("aria-label", label);
    element.addEventListener("click", onClick);
    return element;
  }

  function renameForm(item, entry) {
    const form = document.createElement("form");
    form.className = "conv-rename-form";
    const input = document.createElement("input");
    input.value = entry.title;
    input.maxLength = 120;
    input.setAttribute("aria-label", "Conversation name");
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      if (save && title && title !== entry.title) actions.rename(entry.id, title);
      else render(lastEntries, lastOpen, lastBusy);
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      finish(true);
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
    form.append(input);
    item.replaceChildren(form);
    input.focus();
    input.select();
  }

  function confirmDelete(item, entry) {
    const text = document.createElement("span");
    text.className = "conv-confirm";
    text.textContent = "Delete this chat?";
    const yes = button("danger", "Delete", `Delete “${entry.title}” for good`, () => actions.remove(entry.id));
    const no = button("", "Cancel", null, () => render(lastEntries, lastOpen, lastBusy));
    item.replaceChildren(text, yes, no);
    no.focus();
  }

  let lastEntries = [];
  let lastOpen = null;
  let lastBusy = new Set();

  /**
   * @param {{id: string, title: string}[]} entries newest first
   * @param {string|null} openId
   * @param {Set<string>} busy ids of conversations with an answer streaming
   */
  function render(entries, openId, busy) {
    lastEntries = entries;
    lastOpen = openId;
    lastBusy = busy;
    const items = entries.map((entry) => {
      const item = document.createElement("li");
      item.className = "conv";
      if (entry.id === openId) item.setAttribute("aria-current", "true");
      if (busy.has(entry.id)) item.classList.add("busy");
      const open = button("conv-open", entry.title, null, () => {
        actions.open(entry.id);
        if (narrow.matches) setDrawer(false);
      });
      open.title = entry.title;
      const rename = button("conv-rename icon", "✎", `Rename “${entry.title}”`, () => renameForm(item, entry));
      const remove = button("conv-delete icon", "×", `Delete “${entry.title}”`, () => confirmDelete(item, entry));
      item.append(open, rename, remove);
      return item;
    });
    list.replaceChildren(...items);
  }

  return { render, close: () => setDrawer(false) };
}
